"""``speechtl export``: an experiment's adapter as a stand-alone artefact for ASR products.

The adapter dir a run wrote (``train/model``) already holds PEFT's two files and a card with the
base model and its hash; export copies them and completes the card with what only the finished
experiment knows: WER and CER before and after on each test set (from the report's results.json).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from speechtl.adapt.adapters import CARD, CONFIG, WEIGHTS, AdapterError, is_adapter_dir, read_card, write_card
from speechtl.io import atomic_dir

LOG = logging.getLogger("speechtl.adapt.export")


def _train_dir(exp: Path) -> Path:
    for d in (exp / "train", exp):
        if (d / "summary.json").is_file():
            return d
    raise AdapterError(f"{exp}: no finished training run here (no summary.json in {exp} or {exp / 'train'})")


def _scores(results: Path) -> dict[str, Any]:
    """Per test set: role, utterances, WER and CER before and after (fractions)."""
    data = json.loads(results.read_text(encoding="utf-8"))
    out = {}
    for name, t in data.get("test_sets", {}).items():
        out[name] = {"role": t.get("role"), "utterances": t["after"]["utterances"],
                     **{f"{m}_{when}": t[when][m]["rate"] for m in ("wer", "cer") for when in ("before", "after")}}
    return out


def export_adapter(exp: str | Path, out: str | Path, accent: str | None = None, name: str | None = None) -> dict:
    """Write ``out`` (adapter_config.json, adapter_model.safetensors, speechtl_card.json); returns the card.

    ``exp`` is a recipe's experiment dir (with ``train/`` and ``results.json``) or a training dir.
    """
    exp, out = Path(exp), Path(out)
    train_dir = _train_dir(exp)
    summary = json.loads((train_dir / "summary.json").read_text(encoding="utf-8"))
    model_dir = train_dir / "model"
    if not is_adapter_dir(model_dir):
        raise AdapterError(f"{exp}: method '{summary.get('method')}' trains the model's own weights, so there is no "
                           f"adapter to export; {model_dir} is the whole adapted model, load it directly")
    if read_card(model_dir).get("base_sha256") is None:  # checked before anything is written
        raise AdapterError(f"{model_dir}: the adapter card has no base hash; a product could not check its base")
    results = next((p for p in (exp / "results.json", exp.parent / "results.json") if p.is_file()), None)
    updates: dict[str, Any] = {
        "training": {k: summary.get(k) for k in ("method", "steps", "trainable_parameters", "total_parameters",
                                                 "best_dev_wer", "best_step", "wise_alpha", "peak_memory_bytes")},
        "test_sets": _scores(results) if results else {},
    }
    if accent:
        updates["accent"] = accent
    if name or accent:
        updates["name"] = name or accent
    if results is None:
        LOG.warning("%s: no results.json (run the report stage first): the card will carry no WER", exp)
    with atomic_dir(out) as tmp:
        for f in (CONFIG, WEIGHTS, CARD):
            shutil.copy2(model_dir / f, tmp / f)
        card = write_card(tmp, updates)
    LOG.info("exported %s adapter '%s' to %s", card.get("kind"), card.get("name"), out)
    return card
