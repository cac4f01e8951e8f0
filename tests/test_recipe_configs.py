"""Every recipe's training configs load and actually train, each on a tiny model of its family."""

from pathlib import Path

import pytest
import torch
from helpers import spoken, toy_corpus

from speechtl.adapt.config import load_config
from speechtl.adapt.trainer import train
from speechtl.data.manifest import read_manifest
from speechtl.models import load_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
#: Training configs: all but corpus specs and the CTC recipe's source-model architecture.
CONFIGS = sorted(p for p in RECIPES.glob("*/conf/*.yaml") if p.name not in ("data.yaml", "source_model.yaml"))
SMOKE = ["max_steps=2", "batch_size=2", "eval_every=0", "num_workers=0", "save_every=1", "warmup_steps=1"]


def test_every_recipe_has_both_families():
    """The accent recipes (one method over asr.sh); the synthetic ones and those comparing methods over
    methods.sh (conf/train_<method>.yaml each) are shaped otherwise."""
    recipes = [p for p in RECIPES.iterdir()
               if (p / "run.sh").is_file() and not p.name.startswith("synthetic_caribbean")
               and "TEMPLATE/methods.sh" not in (p / "run.sh").read_text()]
    assert len(recipes) == 11
    for r in recipes:
        assert (r / "conf" / "whisper.yaml").is_file() and (r / "conf" / "wav2vec2.yaml").is_file(), r


@pytest.mark.parametrize("conf", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_config_trains(conf, tiny_whisper, tiny_ctc, tmp_path, monkeypatch):
    if "exp/noise/" in conf.read_text():  # the stand-in noise that the recipe's stage 0 fabricates there
        from speechtl.data.corpora.fabricated_noise import prepare_fabricated_noise

        monkeypatch.chdir(tmp_path)
        prepare_fabricated_noise(tmp_path / "exp" / "noise")
    cfg = load_config(conf, SMOKE)
    ctc = "wav2vec2" in conf.name or conf.parent.parent.name.endswith("_ctc")
    model = load_model(str(tiny_ctc if ctc else tiny_whisper))
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    manifest = toy_corpus(tmp_path / "corpus", n=4)
    if ctc:  # audio a CTC model can align to its letters
        import soundfile as sf

        for u in read_manifest(manifest):
            sf.write(u.audio, spoken(u.text), 16000)
    summary = train(model, read_manifest(manifest, check_audio=True), tmp_path / "run", cfg)
    assert summary["steps"] == 2
    after = model.module.state_dict()
    changed = [k for k, v in after.items() if k not in before or not torch.equal(before[k], v)]
    assert changed
    if cfg.entry.adapter:  # the base stays as it was; only the new adapter weights moved
        assert all(k not in before for k in changed), changed
    if "feature_encoder" in cfg.frozen:
        assert not any("feature_extractor" in k for k in changed)
    for key, value in cfg.model_settings.items():
        assert getattr(model.module.config, key) == value
