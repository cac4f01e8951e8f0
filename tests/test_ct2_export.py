"""CTranslate2 export (speechtl export --format ctranslate2) and the ctranslate2 eval backend, on a tiny Whisper."""

import json

import numpy as np
import pytest
import torch
from helpers import SMALL, spoken_corpus

import speechtl
from speechtl.adapt.adapters import AdapterError
from speechtl.adapt.config import TrainConfig
from speechtl.adapt.export import export_ctranslate2
from speechtl.adapt.trainer import train
from speechtl.cli import main
from speechtl.data.manifest import read_manifest
from speechtl.evaluate.decode import DecodeOptions, load_for_eval
from speechtl.features.audio import load_utterance
from speechtl.models import load_model
from speechtl.models.ct2 import CT2Whisper, cache_root

ctranslate2 = pytest.importorskip("ctranslate2")

EXPORTED = {"model.bin", "config.json", "vocabulary.json", "tokenizer.json", "preprocessor_config.json",
            "speechtl_card.json"}


def cfg(method, **kw):
    base = dict(method=method, learning_rate=1e-2, warmup_steps=0, max_steps=12, batch_size=4, eval_every=0,
                save_every=100, log_every=1, lr_scheduler="constant", settings=SMALL.get(method))
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return spoken_corpus(tmp_path_factory.mktemp("ct2_corpus"), n=8)


@pytest.fixture(scope="module")
def experiments(tiny_whisper, corpus, tmp_path_factory):
    """One trained run per method, made once: the export only reads them."""
    made = {}

    def run(method, **kw):
        if method not in made:
            exp = tmp_path_factory.mktemp(f"exp_{method}")
            train(load_model(str(tiny_whisper)), read_manifest(corpus), exp / "train", cfg(method, **kw))
            made[method] = exp
        return made[method]

    return run


def batch_of(model, manifest):
    return model.collate([load_utterance(u, model.sampling_rate) for u in read_manifest(manifest)])


def greedy_ids(model, batch):
    """The transformers model's greedy tokens after the forced prompt, up to (without) <|endoftext|>.

    The encoder runs first, as in WhisperASR.transcribe: given bare features, transformers' generate pads
    them to 30 s, whatever the model's audio context; at dynamic context the token budget is transcribe's.
    """
    from transformers.modeling_outputs import BaseModelOutput

    gen = model.module.generation_config
    prompt = model.prefix_ids()
    with torch.inference_mode():
        feats = batch["input_features"]
        budget = model.token_budget(feats.shape[-1])  # at dynamic context, as WhisperASR.transcribe limits it
        out = model.module.generate(input_features=feats, num_beams=1, do_sample=False,
                                    encoder_outputs=BaseModelOutput(last_hidden_state=model.encode(feats)),
                                    **({"max_new_tokens": budget} if budget is not None else {}))
    seqs = []
    for row in out.tolist():
        if row[:len(prompt)] == prompt:  # some transformers versions return the prompt too
            row = row[len(prompt):]
        seqs.append(row[:row.index(gen.eos_token_id)] if gen.eos_token_id in row else row)
    return seqs


def test_lora_export_decodes_like_the_adapted_model(experiments, tiny_whisper, corpus, tmp_path):
    exp = experiments("lora")
    out = tmp_path / "ct2"
    assert main(["export", str(exp), "--out", str(out), "--format", "ctranslate2"]) == 0
    assert {p.name for p in out.iterdir()} == EXPORTED
    card = json.loads((out / "speechtl_card.json").read_text())
    adapter_card = json.loads((exp / "train" / "model" / "speechtl_card.json").read_text())
    assert card["format"] == "speechtl-ctranslate2" and card["quantization"] == "float32"
    assert card["method"] == "lora" and card["adapter"] == {"kind": "lora", "merged": True}
    assert card["base_sha256"] == adapter_card["base_sha256"] and card["base_model"] == str(tiny_whisper.resolve())
    assert card["training"]["steps"] == 12 and card["training_data"]["utterances"] == 8

    adapted = speechtl.load_model(str(exp))  # base + LoRA, unmerged: the model as trained
    base = load_model(str(tiny_whisper))
    batch = batch_of(adapted, corpus)
    expected = greedy_ids(adapted, batch)
    assert expected != greedy_ids(base, batch), "the adapter changes nothing: the test could not see a lost merge"
    runtime = CT2Whisper(out, adapted, compute_type="float32")
    assert runtime.compute_type == "float32"
    assert runtime.generate_ids(batch) == expected
    assert runtime.transcribe(batch) == adapted.transcribe(batch)
    # the export is also a model source for speechtl itself (converted back to transformers)
    again = load_model(str(out))
    torch.testing.assert_close(again.module.model.encoder.conv1.weight, adapted.module.model.encoder.conv1.weight)
    assert greedy_ids(again, batch) == expected


def test_dora_export_merges_and_decodes_like_the_adapted_model(experiments, corpus, tmp_path):
    """DoRA folds into the weights like LoRA (PEFT's merge applies each row's magnitude), so it exports."""
    exp = experiments("dora")
    assert json.loads((exp / "train" / "model" / "adapter_config.json").read_text())["use_dora"] is True
    card = export_ctranslate2(exp, tmp_path / "ct2")
    assert card["method"] == "dora" and card["adapter"] == {"kind": "lora", "merged": True}
    adapted = speechtl.load_model(str(exp))
    batch = batch_of(adapted, corpus)
    assert CT2Whisper(tmp_path / "ct2", adapted, compute_type="float32").generate_ids(batch) == greedy_ids(adapted,
                                                                                                           batch)


def test_export_loads_in_faster_whisper(experiments, tmp_path):
    faster_whisper = pytest.importorskip("faster_whisper")
    out = tmp_path / "ct2"
    export_ctranslate2(experiments("lora"), out, quantization="int8")
    model = faster_whisper.WhisperModel(str(out), device="cpu", compute_type="int8")
    assert not model.model.is_multilingual and model.feature_extractor.mel_filters.shape[0] == 80
    assert json.loads((out / "speechtl_card.json").read_text())["quantization"] == "int8"


def test_full_checkpoint_export_decodes_like_the_checkpoint(experiments, corpus, tmp_path):
    exp = experiments("full", max_steps=6, learning_rate=3e-3)
    out = tmp_path / "ct2"
    card = export_ctranslate2(exp, out)
    assert {p.name for p in out.iterdir()} == EXPORTED
    assert card["method"] == "full" and "adapter" not in card and card["training_data"]["utterances"] == 8
    trained = load_model(str(exp / "train"))
    batch = batch_of(trained, corpus)
    assert CT2Whisper(out, trained).generate_ids(batch) == greedy_ids(trained, batch)


def test_bottleneck_adapters_are_refused_clearly(experiments, tmp_path, capsys):
    exp = experiments("adapters", max_steps=1)
    with pytest.raises(AdapterError, match="bottleneck adapter, which CTranslate2 can't run"):
        export_ctranslate2(exp, tmp_path / "ct2")
    assert main(["export", str(exp), "--out", str(tmp_path / "ct2"), "--format", "ctranslate2"]) == 2
    assert "can't be folded into" in capsys.readouterr().err
    assert not (tmp_path / "ct2").exists()
    with pytest.raises(AdapterError, match="train with method lora"):
        load_for_eval(str(exp), DecodeOptions(backend="ctranslate2"))


def test_eval_ctranslate2_backend_writes_the_same_eval_dir(experiments, corpus, tmp_path):
    exp = experiments("lora")
    exports = cache_root() / "ct2-export"
    cached_before = set(exports.iterdir()) if exports.is_dir() else set()  # other tests share the cache
    dirs = {}
    for backend, compute in (("transformers", "default"), ("ctranslate2", "default"), ("ctranslate2", "int8")):
        out = tmp_path / f"{backend}_{compute}"
        assert main(["eval", "--model", str(exp), "--manifest", str(corpus), "--out", str(out), "--batch-size", "3",
                     "--device", "cpu", "--backend", backend, "--compute-type", compute]) == 0
        dirs[backend, compute] = out
    hf, ct, q8 = dirs.values()
    assert {p.name for p in ct.iterdir()} == {p.name for p in hf.iterdir()}
    assert {"hyp.jsonl", "scores.json", "per_utt", "wer"} <= {p.name for p in ct.iterdir()}
    rows = {r["id"]: r for r in map(json.loads, (hf / "hyp.jsonl").read_text().splitlines())}
    ct_rows = [json.loads(x) for x in (ct / "hyp.jsonl").read_text().splitlines()]
    assert len(ct_rows) == 8 and all(r["hyp"] == rows[r["id"]]["hyp"] for r in ct_rows)
    scores = {d: json.loads((d / "scores.json").read_text()) for d in (hf, ct, q8)}
    assert scores[ct]["wer"] == scores[hf]["wer"] and scores[ct]["per_speaker"] == scores[hf]["per_speaker"]
    assert scores[ct]["options"]["backend"] == "ctranslate2" and "CTranslate2 float32" in scores[ct]["model"]
    assert "CTranslate2 int8" in scores[q8]["model"]
    assert (ct / "per_utt").read_text() == (hf / "per_utt").read_text()
    assert (ct / "wer").read_text() == (hf / "wer").read_text()
    # converted once: both compute types ran on one cached float32 export
    assert len(set(exports.iterdir()) - cached_before) == 1
    # the exported dir is a model source for the ctranslate2 backend too, run as it is
    export_ctranslate2(exp, tmp_path / "export")
    out = tmp_path / "from_export"
    assert main(["eval", "--model", str(tmp_path / "export"), "--manifest", str(corpus), "--out", str(out),
                 "--device", "cpu", "--backend", "ctranslate2"]) == 0
    assert json.loads((out / "scores.json").read_text())["wer"] == scores[hf]["wer"]
    assert len(set(exports.iterdir()) - cached_before) == 1


def test_a_compute_type_the_device_cant_run_is_a_clear_error(experiments, corpus, tmp_path, capsys):
    assert main(["eval", "--model", str(experiments("lora")), "--manifest", str(corpus), "--out", str(tmp_path / "e"),
                 "--device", "cpu", "--backend", "ctranslate2", "--compute-type", "bogus"]) == 2
    assert "compute type 'bogus'" in capsys.readouterr().err
    assert main(["eval", "--model", str(experiments("lora")), "--manifest", str(corpus), "--out", str(tmp_path / "m"),
                 "--backend", "ctranslate2", "--no-merge"]) == 2
    assert "CTranslate2 runs plain weights" in capsys.readouterr().err


def test_audio_context_setting_goes_into_the_card_and_back(tiny_whisper, corpus, tmp_path):
    from speechtl.models.ct2 import export_ct2

    model = load_model(str(tiny_whisper))
    model.configure(audio_context="dynamic", audio_context_margin=0.5, audio_context_decode_margin=2.0)
    card = export_ct2(model, tmp_path / "ct2")
    assert card["model_settings"] == {"audio_context": "dynamic", "audio_context_margin": 0.5,
                                      "audio_context_decode_margin": 2.0}
    assert "faster-whisper pads every input to 30 s" in card["note"]
    back = load_model(str(tmp_path / "ct2"))
    assert (back.module.config.audio_context, back.module.config.audio_context_decode_margin) == ("dynamic", 2.0)
    one_second = [np.zeros(16000, np.float32)]
    assert back.collate(one_second)["input_features"].shape[-1] == 300  # the CTranslate2 front decodes at 1 s + 2 s
    # decoded on CTranslate2 with the features the model's own front end makes (at its audio context)
    batch = batch_of(model, corpus)
    if getattr(model, "audio_context", "full") == "dynamic":  # the model family knows the setting
        assert batch["input_features"].shape[-1] < 3000
    assert CT2Whisper(tmp_path / "ct2", model).generate_ids(batch) == greedy_ids(model, batch)
    assert export_ct2(load_model(str(tiny_whisper)), tmp_path / "plain")["model_settings"] == {}
