import json

import pytest
import torch
from helpers import kill_training_after

from speechtl.adapt.config import ConfigError, TrainConfig
from speechtl.adapt.trainer import train
from speechtl.data.manifest import read_manifest
from speechtl.models import load_model


def cfg(**kw):
    base = dict(learning_rate=3e-3, warmup_steps=0, max_steps=8, batch_size=4, eval_every=0, save_every=2,
                log_every=1, lr_scheduler="constant")
    base.update(kw)
    return TrainConfig(**base)


def params(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def losses(out):
    return [e["loss"] for e in map(json.loads, (out / "history.jsonl").read_text().splitlines()) if "loss" in e]


def test_encoder_only_changes_only_the_encoder_and_loss_falls(tiny_whisper, toy_manifest, tmp_path):
    model = load_model(str(tiny_whisper))
    before = params(model)
    summary = train(model, read_manifest(toy_manifest), tmp_path / "exp",
                    cfg(method="freeze", settings=["decoder"], max_steps=12))
    after = params(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.encoder.") for k in changed)
    assert any("layers.0.fc1" in k for k in changed)
    assert summary["trainable_parameters"] < summary["total_parameters"]
    # the method's settings are its block, in the summary and the resolved config.yaml
    assert summary["method"] == "freeze" and summary["freeze"] == ["decoder"]
    written = (tmp_path / "exp" / "config.yaml").read_text()
    assert written.startswith("method: freeze\nfreeze:\n- decoder\n") and "lora" not in written
    ls = losses(tmp_path / "exp")
    assert sum(ls[-3:]) / 3 < sum(ls[:3]) / 3
    for f in ("config.yaml", "env.json", "train.log", "summary.json", "model/config.json", "checkpoint"):
        assert (tmp_path / "exp" / f).exists(), f
    reloaded = load_model(str(tmp_path / "exp"))  # an experiment dir loads as its final model
    assert torch.equal(reloaded.module.state_dict()["model.encoder.conv1.weight"], after["model.encoder.conv1.weight"])


def test_decoder_only_and_feature_encoder(tiny_whisper, toy_manifest, tmp_path):
    model = load_model(str(tiny_whisper))
    before = params(model)
    train(model, read_manifest(toy_manifest), tmp_path / "exp", cfg(method="freeze", settings=["encoder"], max_steps=2))
    changed = {k for k, v in params(model).items() if not torch.equal(before[k], v)}
    assert changed and not any(k.startswith("model.encoder.") for k in changed)
    with pytest.raises(ConfigError, match="unknown part"):
        train(load_model(str(tiny_whisper)), read_manifest(toy_manifest), tmp_path / "exp2",
              cfg(method="freeze", settings=["encodr"]))


def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_whisper, toy_manifest, tmp_path, monkeypatch):
    utts = read_manifest(toy_manifest)  # 8 utterances, batches of 3: epochs of 3 batches, so the kill is mid-epoch
    c = cfg(max_steps=7, batch_size=3, save_every=2, learning_rate=1e-3)
    ref_model = load_model(str(tiny_whisper))
    train(ref_model, utts, tmp_path / "ref", c)

    revive = kill_training_after(monkeypatch, 5)  # killed while fetching step 6: checkpoint of step 4 on disk
    with pytest.raises(KeyboardInterrupt):
        train(load_model(str(tiny_whisper)), utts, tmp_path / "run", c)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4 and not (tmp_path / "run" / "summary.json").exists()
    revive()
    model = load_model(str(tiny_whisper))
    summary = train(model, utts, tmp_path / "run", c)
    assert summary["steps"] == 7
    assert "resuming from" in (tmp_path / "run" / "train.log").read_text()
    ref, got = ref_model.module.state_dict(), model.module.state_dict()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
    # a finished run is not trained again
    assert train(load_model(str(tiny_whisper)), utts, tmp_path / "run", c)["steps"] == 7


def test_dev_evaluation_keeps_the_best_model(tiny_whisper, toy_manifest, tmp_path):
    wers = iter([0.9, 0.4, 0.7])
    model = load_model(str(tiny_whisper))
    summary = train(model, read_manifest(toy_manifest), tmp_path / "exp", cfg(max_steps=6, eval_every=2),
                    evaluator=lambda m: next(wers))
    assert summary["best_dev_wer"] == 0.4 and summary["best_step"] == 4
    assert (tmp_path / "exp" / "best" / "config.json").is_file()


def test_a_dev_wer_tie_keeps_the_later_model(tiny_whisper, toy_manifest, tmp_path):
    wers = iter([1.0, 1.0, 1.0])  # a model learning from scratch: 100% WER for a while
    summary = train(load_model(str(tiny_whisper)), read_manifest(toy_manifest), tmp_path / "exp",
                    cfg(max_steps=6, eval_every=2), evaluator=lambda m: next(wers))
    assert summary["best_step"] == 6


def test_wise_ft_interpolates_best_with_base(tiny_whisper, toy_manifest, tmp_path):
    base = params(load_model(str(tiny_whisper)))
    wers = iter([0.5, 0.3, 0.6, 0.2])  # dev WER at steps 2, 4, 6, then the merged model's
    summary = train(load_model(str(tiny_whisper)), read_manifest(toy_manifest), tmp_path / "exp",
                    cfg(max_steps=6, eval_every=2, method="freeze", settings=["decoder"], wise_alpha=0.5),
                    evaluator=lambda m: next(wers))
    assert summary["best_step"] == 4 and summary["wise_alpha"] == 0.5 and summary["final_dev_wer"] == 0.2
    best, final = params(load_model(str(tmp_path / "exp" / "best"))), params(load_model(str(tmp_path / "exp")))
    k = "model.encoder.layers.0.fc1.weight"
    assert not torch.equal(best[k], base[k])
    torch.testing.assert_close(final[k], 0.5 * best[k] + 0.5 * base[k])
    d = "model.decoder.layers.0.fc1.weight"  # frozen: untouched by training and by the merge
    assert torch.equal(final[d], base[d])


def test_model_settings_reach_the_model_and_bad_ones_are_config_errors(tiny_whisper, toy_manifest, tmp_path):
    model = load_model(str(tiny_whisper))
    summary = train(model, read_manifest(toy_manifest), tmp_path / "exp",
                    cfg(max_steps=1, model_settings={"apply_spec_augment": True, "mask_time_prob": 0.05}))
    assert model.module.config.mask_time_prob == 0.05 and summary["vocabulary"] == "kept"
    with pytest.raises(ConfigError, match="model_settings: unknown seq2seq model setting"):
        train(load_model(str(tiny_whisper)), read_manifest(toy_manifest), tmp_path / "exp2",
              cfg(model_settings={"mask_time_probability": 0.05}))
