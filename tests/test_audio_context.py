"""Whisper's audio context: the full 30 s (as pretrained) or each batch's length plus a margin (dynamic),
trained with, recorded in what a run saves, and overridable at evaluation."""

import json

import numpy as np
import pytest
import torch
from helpers import toy_corpus

import speechtl
from speechtl.adapt.config import TrainConfig
from speechtl.adapt.trainer import train
from speechtl.cli import main
from speechtl.data.manifest import read_manifest
from speechtl.evaluate.decode import DecodeOptions, load_for_eval
from speechtl.models import load_model
from speechtl.models.whisper import MEL_FRAMES_PER_SECOND, TOKEN_BUDGET_SLACK, TOKENS_PER_SECOND


class RuntimeSpy:
    """CTranslate2's runtime (a C++ object: wrapped rather than patched), recording each ``generate`` call's input
    shape and options; everything else is the runtime's own."""

    def __init__(self, runtime):
        self.runtime, self.calls = runtime, []

    def generate(self, features, *args, **kwargs):
        self.calls.append((tuple(features.shape), kwargs))
        return self.runtime.generate(features, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.runtime, name)


def test_encoder_at_30s_is_transformers_and_shorter_inputs_slice_the_positions(tiny_whisper):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    model = load_model(str(tiny_whisper))
    enc = model.module.model.encoder.eval()
    feats = torch.randn(2, 80, 3000)
    with torch.no_grad():
        ours = enc(feats).last_hidden_state
        theirs = WhisperEncoder.forward(enc, feats).last_hidden_state
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        assert enc(feats[..., :400]).last_hidden_state.shape == (2, 200, model.hidden_size)
    with pytest.raises(ValueError, match="even number of mel frames"):
        enc(feats[..., :401])


def test_dynamic_collate_pads_to_the_longest_plus_the_margin(tiny_whisper):
    model = load_model(str(tiny_whisper))
    audios = [np.zeros(16000, np.float32), np.zeros(24000, np.float32)]  # 1.0 s and 1.5 s
    assert model.collate(audios)["input_features"].shape[-1] == 3000
    model.configure(audio_context="dynamic", audio_context_margin=0.5)
    assert model.collate(audios)["input_features"].shape[-1] == 150 + 50
    model.configure(audio_context_margin=0.0)
    assert model.collate([np.zeros(16160, np.float32)])["input_features"].shape[-1] == 102  # 101, made even
    with pytest.raises(ValueError, match="audio_context must be one of"):
        model.configure(audio_context="half")


@pytest.mark.parametrize("context", ["full", "dynamic"])
def test_features_are_the_extractors_own_though_only_the_audio_goes_through_the_stft(context, tiny_whisper,
                                                                                      monkeypatch):
    """collate's features (the audio's, then the floor value) equal, bit for bit, what the feature extractor computes
    from every zero of the padding; a dithering extractor (noise in the zeros) computes them all."""
    model = load_model(str(tiny_whisper))
    model.configure(audio_context=context, audio_context_margin=2.0)
    rng = np.random.default_rng(3)
    audios = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 23999, 161)]
    audios += [np.zeros(8000, np.float32), np.full(4000, 0.5, np.float32)]  # silence; a constant (one spectral bin)
    fe = model.feature_extractor
    ours = model.collate(audios)["input_features"]
    frames = ours.shape[-1]
    theirs = fe(audios, sampling_rate=16000, return_tensors="pt", max_length=frames * fe.hop_length,
                truncation=True).input_features
    assert frames == (3000 if context == "full" else 350) and torch.equal(ours, theirs)
    assert torch.equal(model.collate([np.ones(480000, np.float32)])["input_features"],  # 30 s: nothing to pad
                       fe([np.ones(480000, np.float32)], sampling_rate=16000, return_tensors="pt").input_features)
    asked = []
    real = type(fe).__call__

    def spy(self, raw, **kw):
        asked.append(kw["max_length"])
        return real(self, raw, **kw)

    fe.dither = 1e-4
    monkeypatch.setattr(type(fe), "__call__", spy)
    model.collate(audios)
    assert asked == [frames * fe.hop_length]


def test_a_batch_to_decode_keeps_the_decoding_margin_and_one_to_train_on_the_training_margin(tiny_whisper):
    model = load_model(str(tiny_whisper))
    audios = [np.zeros(16000, np.float32)]  # 1.0 s: 100 mel frames
    model.configure(audio_context="dynamic", audio_context_margin=0.5)
    assert model.collate(audios)["input_features"].shape[-1] == 150  # no decoding margin: the training one
    model.configure(audio_context_decode_margin=2.0)
    assert model.collate(audios)["input_features"].shape[-1] == 300
    assert model.collate(audios, ["a b"])["input_features"].shape[-1] == 150
    with pytest.raises(ValueError, match="audio_context_decode_margin must be a number of seconds"):
        model.configure(audio_context_decode_margin=31)


def test_dynamic_decoding_has_a_token_budget_by_duration(tiny_whisper, monkeypatch):
    model = load_model(str(tiny_whisper))
    seen = {}
    real = model.module.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(model.module, "generate", spy)
    model.transcribe(model.collate([np.zeros(16000, np.float32)]))
    assert "max_new_tokens" not in seen  # full context: as the pretrained model decodes
    model.configure(audio_context="dynamic", audio_context_margin=1.0)
    model.transcribe(model.collate([np.zeros(16000, np.float32)]))
    seconds = 200 / MEL_FRAMES_PER_SECOND
    want = min(int(np.ceil(seconds * TOKENS_PER_SECOND)) + TOKEN_BUDGET_SLACK, 64 - len(model.prefix_ids()))
    assert seen["max_new_tokens"] == want


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_model_adapted_at_dynamic_context_decodes_so_unless_told(method, tiny_whisper, tmp_path):
    manifest = toy_corpus(tmp_path / "data", n=4)
    cfg = TrainConfig(method=method, max_steps=2, batch_size=2, eval_every=0, save_every=2, warmup_steps=0,
                      settings={"rank": 2} if method == "lora" else None,
                      model_settings={"audio_context": "dynamic", "audio_context_margin": 0.5,
                                      "audio_context_decode_margin": 2.0})
    train(load_model(str(tiny_whisper)), read_manifest(manifest), tmp_path / "exp" / "train", cfg)
    if method == "lora":
        card = json.loads((tmp_path / "exp" / "train" / "model" / "speechtl_card.json").read_text())
        assert card["model_settings"] == {"audio_context": "dynamic", "audio_context_margin": 0.5,
                                          "audio_context_decode_margin": 2.0}
    exp = str(tmp_path / "exp" / "train")
    adapted = speechtl.load_model(exp)
    assert adapted.audio_context == "dynamic"
    assert adapted.collate([np.zeros(16000, np.float32)])["input_features"].shape[-1] == 300  # 1 s + 2 s
    assert load_model(str(tiny_whisper)).audio_context == "full"  # the base is untouched
    assert load_for_eval(exp, DecodeOptions(audio_context="full")).audio_context == "full"
    # the CLI override decodes again (a different run key) and says which context it used
    out = tmp_path / "eval"
    assert main(["eval", "--model", exp, "--manifest", str(manifest), "--out", str(out / "dyn")]) == 0
    assert main(["eval", "--model", exp, "--manifest", str(manifest), "--out", str(out / "dyn"),
                 "--audio-context", "full"]) == 0
    assert json.loads((out / "dyn" / "scores.json").read_text())["options"]["audio_context"] == "full"
    told = load_for_eval(exp, DecodeOptions(audio_context_margin=3.0)).module.config
    assert (told.audio_context_decode_margin, told.audio_context_margin) == (3.0, 0.5)  # training's is left as saved
    assert main(["eval", "--model", exp, "--manifest", str(manifest), "--out", str(out / "m3"),
                 "--audio-context-margin", "3"]) == 0
    assert json.loads((out / "m3" / "scores.json").read_text())["options"]["audio_context_margin"] == 3.0
    assert main(["eval", "--model", exp, "--manifest", str(manifest), "--out", str(out / "bad"),
                 "--audio-context", "full", "--audio-context-margin", "3"]) == 2


def test_audio_context_override_refused_for_ctc(tiny_ctc, tmp_path):
    manifest = toy_corpus(tmp_path / "data", n=2)
    assert main(["eval", "--model", str(tiny_ctc), "--manifest", str(manifest), "--out", str(tmp_path / "e"),
                 "--audio-context", "dynamic"]) == 2


def test_the_ctranslate2_backend_keeps_the_same_token_budget(tiny_whisper):
    from speechtl.models.ct2 import CT2Whisper

    model = load_model(str(tiny_whisper))
    model.configure(audio_context="dynamic", audio_context_margin=1.0)
    ct = CT2Whisper.from_model(model, compute_type="float32")
    ct.runtime = spy = RuntimeSpy(ct.runtime)
    batch = ct.collate([np.zeros(16000, np.float32)])
    ct.transcribe(batch)
    assert spy.calls[0][1]["max_length"] == 2 * model.token_budget(batch["input_features"].shape[-1])


def test_a_loop_at_dynamic_context_is_decoded_again_at_30s(tiny_whisper, monkeypatch):
    """The random tiny model never ends a transcript: at dynamic context each is decoded again at the full context,
    from the short features padded with each utterance's floor; with audio_context_fallback: false, not."""
    from speechtl.models.whisper import WhisperASR

    model = load_model(str(tiny_whisper))
    model.configure(audio_context="dynamic")
    rng = np.random.default_rng(0)
    audios = [0.1 * rng.standard_normal(16000).astype(np.float32), 0.1 * rng.standard_normal(8000).astype(np.float32)]
    batch = model.collate(audios)
    seen, real = [], WhisperASR._decode

    def spy(self, b, num_beams=1, **kw):
        seen.append((b["input_features"].clone(), self.audio_context, kw.get("max_new_tokens")))
        return real(self, b, num_beams, **kw)

    monkeypatch.setattr(WhisperASR, "_decode", spy)
    texts = model.transcribe(batch)
    assert len(texts) == 2 and len(seen) == 2  # the short decode, then the two that did not end, again
    (short, ctx0, _), (again, ctx1, budget) = seen
    assert ctx0 == "dynamic" and ctx1 == "full" and again.shape[-1] == 3000 and model.audio_context == "dynamic"
    torch.testing.assert_close(again[..., :short.shape[-1]], short)
    for i in range(2):
        assert torch.all(again[i, :, short.shape[-1]:] == short[i].min())
    assert budget == model.token_budget(short.shape[-1])  # no longer than the short decode was allowed
    seen.clear()
    model.configure(audio_context_fallback=False)
    model.transcribe(batch)
    assert len(seen) == 1


def test_the_ctranslate2_backend_falls_back_the_same_way(tiny_whisper):
    from speechtl.models.ct2 import CT2Whisper

    model = load_model(str(tiny_whisper))
    model.configure(audio_context="dynamic")
    ct = CT2Whisper.from_model(model, compute_type="float32")
    ct.runtime = spy = RuntimeSpy(ct.runtime)
    audio = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    batch = ct.collate([audio])
    assert ct.transcribe(batch) == model.transcribe(model.collate([audio]))
    # the short decode, then the loop again at 30 s (one utterance: its features go to generate as they are)
    assert [shape[-1] for shape, _ in spy.calls] == [batch["input_features"].shape[-1], 3000]


def test_the_ctranslate2_backend_encodes_one_utterance_at_a_time_on_cpu(tiny_whisper):
    import ctranslate2

    from speechtl.models.ct2 import CT2Whisper

    model = load_model(str(tiny_whisper))
    ct = CT2Whisper.from_model(model, compute_type="float32")
    rng = np.random.default_rng(1)
    batch = ct.collate([0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 24000, 8000)])
    whole = CT2Whisper.from_model(model, compute_type="float32")
    whole._encoded = lambda feats: ctranslate2.StorageView.from_array(feats)  # the batch as it is, to compare
    ct.runtime = spy = RuntimeSpy(ct.runtime)
    assert ct.generate_ids(batch) == whole.generate_ids(batch)
    frames = batch["input_features"].shape[-1]
    assert spy.calls[0][0] == (3, frames // 2, model.hidden_size)  # encoder states, not features
