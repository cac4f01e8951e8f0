"""A training dir is skipped or resumed only under the same config, base model and manifests (train_key.json);
a run made with other inputs is refused, naming what changed, and --force moves it aside."""

import json

import pytest
import yaml
from helpers import kill_training_after, write_manifest_rows

from speechtl.adapt.config import ConfigError, TrainConfig
from speechtl.adapt.rundir import TrainDirError
from speechtl.adapt.trainer import train
from speechtl.cli import main
from speechtl.data.manifest import ManifestError, read_manifest
from speechtl.errors import SpeechtlError
from speechtl.models import load_model

BASE = dict(learning_rate=1e-5, warmup_steps=0, max_steps=2, batch_size=4, eval_every=0, save_every=1, log_every=1,
            lr_scheduler="constant")


def cfg(**kw):
    return TrainConfig(**{**BASE, **kw})


def run(tiny_whisper, manifest, out, c, **kw):
    return train(load_model(str(tiny_whisper)), read_manifest(manifest), out, c, train_manifest=manifest, **kw)


def no_training(monkeypatch):
    """Any batch fetched from now on fails the test: a skipped run trains nothing."""
    kill_training_after(monkeypatch, 0)


def test_same_inputs_skip_and_the_key_is_on_disk(tiny_whisper, toy_manifest, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    first = run(tiny_whisper, toy_manifest, out, cfg())
    key = json.loads((out / "train_key.json").read_text())
    assert set(key) >= {"key", "config", "base_model", "manifests"}
    assert key["config"]["learning_rate"] == 1e-5 and key["manifests"]["train"]["path"] == str(toy_manifest)
    assert key["manifests"]["train"]["utterances"] == 8 and key["base_model"]["name_or_path"] == str(tiny_whisper)
    no_training(monkeypatch)
    # operational keys (workers, logging, saving) don't make another run
    assert run(tiny_whisper, toy_manifest, out, cfg(log_every=5, save_every=3)) == first
    assert "nothing to do" in (out / "train.log").read_text()


def test_a_changed_config_is_refused_naming_the_key(tiny_whisper, toy_manifest, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    summary = run(tiny_whisper, toy_manifest, out, cfg())
    no_training(monkeypatch)
    with pytest.raises(TrainDirError, match=r"learning_rate 1e-05 -> 0\.001") as e:
        run(tiny_whisper, toy_manifest, out, cfg(learning_rate=1e-3))
    assert isinstance(e.value, SpeechtlError) and "--force" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TrainDirError, match=r"max_steps 2 -> 3; augment\.speed\.prob \(unset\) -> 0\.5;"):
        run(tiny_whisper, toy_manifest, out, cfg(max_steps=3, augment={"speed": {"prob": 0.5}}))
    # the run is left as it was
    assert json.loads((out / "summary.json").read_text()) == summary
    assert yaml.safe_load((out / "config.yaml").read_text())["learning_rate"] == 1e-5


def test_a_changed_manifest_or_base_model_is_refused(tiny_whisper, toy_manifest, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    run(tiny_whisper, toy_manifest, out, cfg())
    no_training(monkeypatch)
    lines = toy_manifest.read_text().splitlines(keepends=True)
    toy_manifest.write_text("".join(lines[:-1]))
    with pytest.raises(TrainDirError, match=f"training manifest {toy_manifest}: other content"):
        run(tiny_whisper, toy_manifest, out, cfg())
    toy_manifest.write_text("".join(lines))
    other = tmp_path / "other_base"
    from helpers import build_tiny_whisper

    build_tiny_whisper(other)
    with pytest.raises(TrainDirError, match=f"base model {tiny_whisper} -> {other}"):
        run(other, toy_manifest, out, cfg())
    # a dev set the run did not choose its best model on is another run too
    with pytest.raises(TrainDirError, match=f"dev manifest none -> {toy_manifest}"):
        run(tiny_whisper, toy_manifest, out, cfg(), evaluator=lambda m: 0.5, dev_manifest=toy_manifest)


def test_utterances_given_in_python_are_keyed_by_their_records(tiny_whisper, toy_manifest, tmp_path, monkeypatch):
    utts, out = read_manifest(toy_manifest), tmp_path / "exp"
    train(load_model(str(tiny_whisper)), utts, out, cfg())
    assert json.loads((out / "train_key.json").read_text())["manifests"]["train"]["path"] is None
    no_training(monkeypatch)
    assert train(load_model(str(tiny_whisper)), read_manifest(toy_manifest), out, cfg())["steps"] == 2
    with pytest.raises(TrainDirError, match="training manifest"):
        train(load_model(str(tiny_whisper)), utts[:7], out, cfg())


def test_a_killed_run_resumes_only_under_its_own_config(tiny_whisper, toy_manifest, tmp_path, monkeypatch):
    out, c = tmp_path / "exp", cfg(max_steps=4)
    revive = kill_training_after(monkeypatch, 3)  # killed fetching step 4: the checkpoint of step 3 on disk
    with pytest.raises(KeyboardInterrupt):
        run(tiny_whisper, toy_manifest, out, c)
    revive()
    assert (out / "checkpoint").is_dir() and not (out / "summary.json").exists()
    with pytest.raises(TrainDirError, match=r"checkpoint.*seed 42 -> 7"):
        run(tiny_whisper, toy_manifest, out, cfg(max_steps=4, seed=7))
    assert run(tiny_whisper, toy_manifest, out, c)["steps"] == 4
    assert "resuming from" in (out / "train.log").read_text()


def test_a_run_from_before_train_keys_counts_when_its_config_is_the_same(tiny_whisper, toy_manifest, tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "exp"
    run(tiny_whisper, toy_manifest, out, cfg())
    (out / "train_key.json").unlink()
    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["target_style"]  # a key added since: the old run had its default
    (out / "config.yaml").write_text(yaml.safe_dump(old))
    no_training(monkeypatch)
    assert run(tiny_whisper, toy_manifest, out, cfg())["steps"] == 2
    with pytest.raises(TrainDirError, match=r'method "full" -> "lora"'):
        run(tiny_whisper, toy_manifest, out, cfg(method="lora"))
    (out / "config.yaml").unlink()
    with pytest.raises(TrainDirError, match="no train_key.json or config.yaml"):
        run(tiny_whisper, toy_manifest, out, cfg())


def cli_train(tiny_whisper, manifest, out, *extra):
    sets = [a for k, v in BASE.items() for a in ("--set", f"{k}={v}")]
    return main(["train", "--model", str(tiny_whisper), "--train", str(manifest), "--out", str(out), *sets, *extra])


def test_cli_refuses_in_one_line_with_exit_2_and_force_moves_the_run_aside(tiny_whisper, toy_manifest, tmp_path,
                                                                           capsys):
    out = tmp_path / "exp"
    assert cli_train(tiny_whisper, toy_manifest, out) == 0
    first = (out / "model" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert cli_train(tiny_whisper, toy_manifest, out, "--set", "learning_rate=0.001") == 2
    err = capsys.readouterr().err.splitlines()[-1]  # before it: the log on stderr
    assert err.startswith(f"speechtl train: error: {out}: holds a training run")
    assert "learning_rate 1e-05 -> 0.001" in err and "--force" in err and "another --out" in err
    assert cli_train(tiny_whisper, toy_manifest, out, "--set", "learning_rate=0.001", "--force") == 0
    aside = list(tmp_path.glob("exp.old-*"))
    assert len(aside) == 1
    old, new = aside[0], out
    assert (old / "model" / "model.safetensors").read_bytes() == first  # nothing lost
    assert json.loads((old / "train_key.json").read_text())["config"]["learning_rate"] == 1e-5
    assert json.loads((new / "train_key.json").read_text())["config"]["learning_rate"] == 1e-3
    assert (new / "model" / "model.safetensors").read_bytes() != first
    log = (new / "train.log").read_text()
    assert "training afresh" in log and "step 2/2" in log  # this run's log is in the new dir, not the old one
    assert "training afresh" not in (old / "train.log").read_text()


def test_training_progress_is_log_lines(tiny_whisper, toy_manifest, tmp_path):
    out = tmp_path / "exp"
    run(tiny_whisper, toy_manifest, out, cfg())
    log = (out / "train.log").read_text()
    assert "speechtl.progress: train: 2/2 step (100%)" in log and "\r" not in log


def test_bad_data_errors_are_speechtl_errors(tiny_whisper, toy_manifest, tmp_path):
    with pytest.raises(ConfigError, match="min_duration 5 s and max_duration 6 s"):
        run(tiny_whisper, toy_manifest, tmp_path / "a", cfg(min_duration=5.0, max_duration=6.0))
    rows = [json.loads(line) for line in toy_manifest.read_text().splitlines()]
    rows[3]["text"] = " ".join(["the cat sat on the mat"] * 20)  # past the tiny Whisper's 64 tokens
    long = write_manifest_rows(toy_manifest.parent / "long.jsonl", rows)
    with pytest.raises(ManifestError, match=r"u3 \(.*long\.jsonl:4\): transcript is \d+ tokens, longer than Whisper's"
                                            r" 64.*drop it from the manifest"):
        run(tiny_whisper, long, tmp_path / "b", cfg(max_steps=8))
