"""The real-accent recipe (speechocean762, Mandarin-L1 English): its options, its configs, and stage 0 offline on a
fabricated copy of the corpus in its own Kaldi layout, shared by every method it runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import corpus_miniatures as mini
import pytest
from test_speechocean762_kaldi import SPEAKERS, make_corpus

from speechtl.adapt.config import load_config

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "speechocean762_english"


def run(*args, env_extra=None, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env_extra or {}))
    return subprocess.run(["bash", str(RECIPE / "run.sh"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_help_shows_the_recipe_settings_and_bad_options_fail_before_any_work(tmp_path):
    res = run("--help")
    assert res.returncode == 0, res.stderr
    for setting in ("--model 'openai/whisper-tiny.en'", "--methods 'lora_gate'",
                    "--exp-root 'exp/whisper_tiny_en'",
                    "--test-sets 'test_adults test_children'", "--roles 'test_adults=target test_children=target'",
                    "--train-args"):
        assert setting in res.stdout, setting
    res = run("--exp-root", tmp_path / "exp", "--methods", "lora nonesuch")
    assert res.returncode == 2 and "no training config conf/train_nonesuch.yaml" in res.stderr
    res = run("--exp-root", tmp_path / "exp", "--bogus-option", 1)
    assert res.returncode == 2 and "unknown option --bogus-option" in res.stderr
    assert not (tmp_path / "exp").exists()


def test_configs_load_one_per_method_all_at_dynamic_audio_context(tmp_path, monkeypatch):
    from speechtl.data.corpora.fabricated_noise import prepare_fabricated_noise

    monkeypatch.chdir(tmp_path)  # where run.sh fabricates the noise that the noise conf names
    prepare_fabricated_noise(tmp_path / "exp" / "noise")
    confs = {p.name: load_config(p) for p in sorted((RECIPE / "conf").glob("*.yaml"))}
    assert {"train_lora.yaml", "train_encoder.yaml", "train_adapters.yaml", "train_full.yaml",
            "gpu_whisper_small.yaml"} <= set(confs)
    methods = {name: c.method for name, c in confs.items() if name.startswith("train_")}
    assert {"train_lora.yaml": "lora", "train_encoder.yaml": "freeze", "train_adapters.yaml": "adapters",
            "train_full.yaml": "full"}.items() <= methods.items()
    assert all(m == "lora" for n, m in methods.items() if n.startswith("train_lora"))  # the measured LoRA variants
    assert confs["train_lora_distill.yaml"].distill_weight > 0 and confs["train_lora_encoder.yaml"].settings.stacks
    assert confs["train_encoder.yaml"].settings == ["decoder"]
    # the default gates what train_lora_400.yaml trains, and trains it the same way (the gate is not in the key)
    from speechtl.adapt.rundir import keyed_config

    assert confs["train_lora_gate.yaml"].gate["base_share"] == 0.15 and not confs["train_lora_400.yaml"].gate
    assert keyed_config(confs["train_lora_gate.yaml"].to_dict()) == keyed_config(confs["train_lora_400.yaml"].to_dict())
    for name, c in confs.items():
        assert c.model_settings == {"audio_context": "dynamic", "audio_context_margin": 1.0}, name
    gpu = confs["gpu_whisper_small.yaml"]
    assert gpu.mixed_precision == "auto" and gpu.gradient_checkpointing and gpu.batch_size > 8
    assert "GPU" in (RECIPE / "conf" / "gpu_whisper_small.yaml").read_text().splitlines()[0]


def test_readme_names_the_corpus_licence_and_where_results_are():
    readme = (RECIPE / "README.md").read_text()
    for needle in ("`SPEECHOCEAN762_DIR`", "Apache 2.0", "OpenSLR 101", "## Results", "RESULTS.md",
                   *(f"`conf/{p.name}`" for p in (RECIPE / "conf").glob("*.yaml"))):
        assert needle in readme, needle
    assert os.access(RECIPE / "run.sh", os.X_OK) and os.access(RECIPE / "local" / "data.sh", os.X_OK)


@pytest.mark.slow
def test_stage0_offline_on_the_kaldi_layout_once_for_all_methods(tmp_path):
    src = make_corpus(tmp_path / "speechocean762")
    root = tmp_path / "exp"
    recipe_before = mini.tree(RECIPE, skip=RECIPE / "exp")  # exp/: others' runs may be writing there
    res = run("--stop-stage", 0, "--exp-root", root, "--methods", "lora full", "--results-md", tmp_path / "R.md",
              env_extra={"SPEECHOCEAN762_DIR": str(src), "HF_HUB_OFFLINE": "1",
                         "HF_HOME": str(tmp_path / "hf_home")})  # must stay absent: nothing cached outside
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    data = root / "data"
    sets = mini.read_sets({n: data / f"{n}.jsonl" for n in ("train", "dev", "test_adults", "test_children")})
    mini.assert_speaker_disjoint(sets)
    assert {u.speaker for u in sets["test_adults"]} == {"9601", "9603"}
    assert {u.speaker for u in sets["test_children"]} == {"9602"}
    assert len(sets["train"]) + len(sets["dev"]) == 2 * len(SPEAKERS["train"]) and sets["dev"]
    assert all(u.accent == "mandarin" for s in sets.values() for u in s)
    assert json.loads((data / "summary.json").read_text())
    # one data dir for both methods: the second method's stage 0 finds it prepared
    assert (data / "prepare.log").read_text().count("already prepared with these options") == 1
    for method in ("lora", "full"):
        assert "stages 0-0" in (root / method / "commands.txt").read_text()
    assert sorted(p.name for p in root.iterdir()) == ["data", "full", "lora"]  # no before/ or compare/ at stage 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "speechocean762"]  # no R.md, no hf_home
    assert mini.tree(RECIPE, skip=RECIPE / "exp") == recipe_before
