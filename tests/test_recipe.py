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
    exp, results = tmp_path / "exp", tmp_path / "RESULTS.md"
    common = ["--model", tiny_whisper, "--exp", exp, "--train-config", DATA / "tiny_train.yaml",
              "--results-md", results, "--eval-batch-size", 4, "--general-manifest", ""]
    res = run_recipe(*common)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for s in ("test_caribbean", "test_us"):
        for when in ("before", "after"):
            assert (exp / "eval" / when / s / "scores.json").is_file()
    assert (exp / "train" / "summary.json").is_file()
    text = results.read_text()
    assert "| test_caribbean | target |" in text and "| test_us | source |" in text
    assert "WER before" in text and "Per speaker" in text
    assert "| test_caribbean | target |" in res.stdout  # the table is printed at the end
    assert not (exp / "eval" / "before" / "general").exists()
    assert "general set was skipped" in text
    data = json.loads((exp / "results.json").read_text())
    assert data["schema_version"] == 2 and data["train"]["steps"] == 4
    car = data["test_sets"]["test_caribbean"]
    one_speaker = len(car["after"]["per_speaker"]) == 1  # the miniature corpus: speakers, or one speaker's utts
    assert car["statistics"]["wer"]["block_unit"] == ("utterance" if one_speaker else "speaker")
    assert car["statistics"]["wer"]["blocks"] == (car["after"]["utterances"] if one_speaker
                                                  else len(car["after"]["per_speaker"]))
    assert data["forgetting"]["target_sets"] == ["test_caribbean"] and data["forgetting"]["source_sets"] == ["test_us"]
    assert "## Forgetting" in text and "P(after better)" in text and "## Error analysis" in text
    for png in ("wer_per_accent.png", "speaker_scatter.png"):  # linked from RESULTS.md, copied beside its copy
        assert f"](plots/{png})" in text and (tmp_path / "plots" / png).is_file() and (exp / "plots" / png).is_file()
    assert (exp / "scoring" / "test_us" / "after" / "per_spk").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.suffix in (".json", ".wav", ".safetensors")
              and "results.json" not in p.name}
    res = run_recipe(*common, "--stage", 0, "--stop-stage", 3)
    assert res.returncode == 0, res.stderr[-3000:]
    changed = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert not changed, changed


@pytest.mark.slow
def test_recipe_with_general_set_and_bad_options(tiny_whisper, espeak, toy_manifest, tmp_path):
    res = run_recipe("--model", tiny_whisper, "--exp", tmp_path / "exp", "--bogus-option", 1)
    assert res.returncode == 2 and "unknown option --bogus-option" in res.stderr
    res = run_recipe("--model", tiny_whisper, "--exp", tmp_path / "exp", "--general-manifest", tmp_path / "nope")
    assert res.returncode == 2 and "not found" in res.stderr
    exp = tmp_path / "exp"
    res = run_recipe("--model", tiny_whisper, "--exp", exp, "--train-config", DATA / "tiny_train.yaml",
                     "--general-manifest", toy_manifest, "--stop-stage", 1)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (exp / "eval" / "before" / "general" / "scores.json").is_file()
    assert not (exp / "train").exists()
    res = run_recipe("--model", tiny_whisper, "--exp", exp, "--train-config", DATA / "tiny_train.yaml",
                     "--general-manifest", toy_manifest, "--stage", 2, "--results-md", tmp_path / "R.md")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| general | general |" in (tmp_path / "R.md").read_text()
