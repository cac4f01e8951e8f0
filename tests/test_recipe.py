"""The offline recipe end to end, on a tiny random Whisper and a miniature espeak corpus."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "synthetic_caribbean" / "run.sh"
DATA = Path(__file__).parent / "data"


def run_recipe(*args, env_extra=None):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DATA_SPEC=str(DATA / "tiny_espeak.yaml"), **(env_extra or {}))
    return subprocess.run(["bash", str(RECIPE), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.mark.slow
def test_recipe_end_to_end_then_stages_rerun_as_noops(tiny_whisper, espeak, tmp_path):
    root, results = tmp_path / "exp", tmp_path / "RESULTS.md"
    common = ["--model", tiny_whisper, "--exp-root", root, "--methods", f"{DATA / 'tiny_train.yaml'} lora",
              "--results-md", results, "--eval-batch-size", 4, "--general-manifest", "",
              "--train-args", "--set max_steps=4 --set eval_every=2 --set batch_size=4 --set warmup_steps=0",
              "--eval-args", "--beams 2"]
    res = run_recipe(*common)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exp = root / "tiny_train"
    for s in ("test_caribbean", "test_us"):
        assert (root / "before" / s / "scores.json").is_file()  # the base model is evaluated once for all methods
        for m in ("tiny_train", "lora"):
            assert (root / m / "eval" / "after" / s / "scores.json").is_file()
    assert not (exp / "eval" / "before").exists() and (exp / "train" / "summary.json").is_file()
    for ev in (root / "before", root / "lora" / "eval" / "after"):  # --eval-args: before and after alike
        assert json.loads((ev / "test_us" / "scores.json").read_text())["options"]["num_beams"] == 2
    assert (root / "lora" / "train" / "model" / "adapter_model.safetensors").is_file()
    # RESULTS.md: the methods side by side, with trainable parameters, and a link to each one's report
    text = results.read_text()
    assert "### test_caribbean (target)" in text and "trainable params" in text
    for system in ("| whisper-tiny.en (base) |", "| tiny_train | freeze (frozen: decoder) |",
                   "| lora | lora |"):
        assert system in text, system
    assert "- [lora](results/lora/RESULTS.md)" in text
    detail = (tmp_path / "results" / "tiny_train" / "RESULTS.md").read_text()
    assert "| test_caribbean | target |" in detail and "| test_us | source |" in detail
    assert "WER before" in detail and "Per speaker" in detail
    assert "general set was skipped" in detail and "peak memory" in detail
    data = json.loads((exp / "results.json").read_text())
    assert data["schema_version"] == 2 and data["train"]["steps"] == 4
    car = data["test_sets"]["test_caribbean"]
    one_speaker = len(car["after"]["per_speaker"]) == 1  # the miniature corpus: speakers, or one speaker's utts
    assert car["statistics"]["wer"]["block_unit"] == ("utterance" if one_speaker else "speaker")
    assert car["statistics"]["wer"]["blocks"] == (car["after"]["utterances"] if one_speaker
                                                  else len(car["after"]["per_speaker"]))
    assert data["forgetting"]["target_sets"] == ["test_caribbean"] and data["forgetting"]["source_sets"] == ["test_us"]
    assert "## Forgetting" in detail and "P(after better)" in detail and "## Error analysis" in detail
    for png in ("wer_per_accent.png", "speaker_scatter.png"):  # linked from the report, copied beside its copy
        assert f"](plots/{png})" in detail and (tmp_path / "results" / "tiny_train" / "plots" / png).is_file()
    assert (exp / "scoring" / "test_us" / "after" / "per_spk").is_file()
    # the LoRA run exports as a product-ready adapter with the recipe's WER in its card
    from speechtl.cli import main

    assert main(["export", str(root / "lora"), "--out", str(tmp_path / "adapter")]) == 0
    card = json.loads((tmp_path / "adapter" / "speechtl_card.json").read_text())
    assert set(card["test_sets"]) == {"test_caribbean", "test_us"} and card["accent"] == "caribbean"
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.suffix in (".json", ".wav", ".safetensors")
              and "results.json" not in p.name and "compare" not in p.parts}
    res = run_recipe(*common, "--stage", 0, "--stop-stage", 3)
    assert res.returncode == 0, res.stderr[-3000:]
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert not changed, changed


@pytest.mark.slow
def test_recipe_with_general_set_and_bad_options(tiny_whisper, espeak, toy_manifest, tmp_path):
    root = tmp_path / "exp"
    tiny = ["--methods", DATA / "tiny_train.yaml"]
    res = run_recipe("--model", tiny_whisper, "--exp-root", root, *tiny, "--bogus-option", 1)
    assert res.returncode == 2 and "unknown option --bogus-option" in res.stderr
    res = run_recipe("--model", tiny_whisper, "--exp-root", root, "--methods", "nonesuch")
    assert res.returncode == 2 and "no training config conf/train_nonesuch.yaml" in res.stderr
    res = run_recipe("--model", tiny_whisper, "--exp-root", root, *tiny, "--general-manifest", tmp_path / "nope")
    assert res.returncode == 2 and "not found" in res.stderr
    res = run_recipe("--model", tiny_whisper, "--exp-root", root, *tiny, "--general-manifest", toy_manifest,
                     "--stop-stage", 1)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (root / "before" / "general" / "scores.json").is_file()
    assert not (root / "tiny_train" / "train").exists() and not (tmp_path / "R.md").exists()
    res = run_recipe("--model", tiny_whisper, "--exp-root", root, *tiny, "--general-manifest", toy_manifest,
                     "--stage", 2, "--results-md", tmp_path / "R.md")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| general | general |" in (tmp_path / "results" / "tiny_train" / "RESULTS.md").read_text()
    assert "### general (general)" in (tmp_path / "R.md").read_text()


@pytest.mark.slow
def test_ctc_recipe_trains_a_source_model_then_adapts_it(espeak, tmp_path):
    recipe = ROOT / "recipes" / "synthetic_caribbean_ctc" / "run.sh"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DATA_SPEC=str(DATA / "tiny_espeak_ctc.yaml"), SOURCE_EXP=str(tmp_path / "source"),
               SOURCE_MODEL_CONFIG=str(DATA / "tiny_ctc_model.yaml"),
               SOURCE_TRAIN_CONFIG=str(DATA / "tiny_ctc_train.yaml"))
    args = ["--exp", tmp_path / "exp", "--train-config", DATA / "tiny_ctc_train.yaml", "--results-md",
            tmp_path / "RESULTS.md", "--eval-batch-size", 4]
    res = subprocess.run(["bash", str(recipe), *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    source = tmp_path / "source"
    assert (source / "init" / "config.json").is_file() and (source / "train" / "model" / "vocab.json").is_file()
    assert json.loads((source / "train" / "summary.json").read_text())["train_accents"] == {"us": 8}
    assert "source model from scratch" in (source / "timings.tsv").read_text()
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| test_caribbean | target |" in text and "CER" in text
    data = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert data["train"]["base_model"] == str(source / "train") and data["train"]["vocabulary"] == "kept"
    # a second run reuses the source model rather than training it again
    stamp = (source / "train" / "summary.json").stat().st_mtime_ns
    res = subprocess.run(["bash", str(recipe), *map(str, args), "--stage", "4"], capture_output=True, text=True,
                         env=env, timeout=900)
    assert res.returncode == 0 and (source / "train" / "summary.json").stat().st_mtime_ns == stamp
