"""``speechtl export``: an experiment's model as a stand-alone artefact for ASR products.

Two formats:

- ``adapter``: the adapter dir a LoRA/adapters run wrote (``train/model``) already holds PEFT's two
  files and a card with the base model and its hash; export copies them and completes the card with
  what only the finished experiment knows: WER and CER before and after on each test set (from the
  report's results.json).
- ``ctranslate2``: the whole adapted model (a LoRA adapter merged into its base, or a full/freeze
  checkpoint) converted by CTranslate2's own converter, for faster-whisper, WhisperX and the ASR
  servers built on CTranslate2; the same card facts go into its ``speechtl_card.json``. A bottleneck
  adapter can't be merged into the weights, so it can't be exported this way.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from speechtl.adapt.adapters import (
    BOTTLENECK_TYPE,
    CARD,
    CONFIG,
    STACKED,
    WEIGHTS,
    AdapterError,
    is_adapter_dir,
    load,
    read_card,
    write_card,
)
from speechtl.adapt.methods import adapter_name
from speechtl.io import atomic_dir
from speechtl.layout import ExperimentDir, train_dir_of
from speechtl.models.base import SpeechModel

LOG = logging.getLogger("speechtl.adapt.export")


def _train_dir(exp: Path) -> Path:
    d = train_dir_of(exp)
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


def _experiment_card(exp: Path, summary: dict[str, Any], accent: str | None, name: str | None) -> dict[str, Any]:
    """What only the finished experiment knows, for either format's card: training facts and test-set scores."""
    candidates = [ExperimentDir(exp).results] + [e.results for e in [ExperimentDir.of_train_dir(exp)] if e]
    results = next((p for p in candidates if p.is_file()), None)
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
    return updates


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
                           f"adapter to export; {model_dir} is the whole adapted model, load it directly "
                           "(or export it with --format ctranslate2)")
    if read_card(model_dir).get("base_sha256") is None:  # checked before anything is written
        raise AdapterError(f"{model_dir}: the adapter card has no base hash; a product could not check its base")
    updates = _experiment_card(exp, summary, accent, name)
    with atomic_dir(out) as tmp:
        for f in (CONFIG, WEIGHTS, CARD):
            shutil.copy2(model_dir / f, tmp / f)
        if (model_dir / STACKED).is_dir():  # the adapters it was trained on top of
            shutil.copytree(model_dir / STACKED, tmp / STACKED)
        card = write_card(tmp, updates)
    LOG.info("exported %s adapter '%s' to %s", card.get("kind"), card.get("name"), out)
    return card


def _refuse_bottleneck(where: str, name: str) -> None:
    raise AdapterError(f"{where}: adapter '{name}' is a bottleneck adapter, which CTranslate2 can't run: it adds a "
                       "small network with a non-linearity after each block, so unlike LoRA it can't be folded into "
                       "Whisper's own weights. Serve or evaluate it with speechtl (transformers backend), or train "
                       "with method lora for a CTranslate2 / faster-whisper model.")


def merge_for_serving(model: SpeechModel) -> SpeechModel:
    """``model`` with its active LoRA adapter folded into the weights (plain weights, as CTranslate2 runs them).

    A bottleneck adapter can't be folded, so it is refused rather than silently dropped.
    """
    adapters = model.adapters
    if adapters is None or not adapters.names():
        return model
    active = adapters.active
    if active is None:
        raise AdapterError(f"{model.source}: adapters {adapters.names()} are loaded but none is active; activate the "
                           "one to serve (model.set_adapter(name))")
    if getattr(adapters, "kinds", {}).get(active) == "bottleneck":
        _refuse_bottleneck(model.source, active)
    model.merge(active)
    return model


def export_ctranslate2(exp: str | Path, out: str | Path, quantization: str = "float32", accent: str | None = None,
                       name: str | None = None) -> dict:
    """Write ``out`` as a CTranslate2 Whisper dir that ``faster_whisper.WhisperModel(out)`` loads; returns its card.

    ``exp`` as for :func:`export_adapter`; its ``model/`` may be a LoRA adapter (merged into the base its
    card names, after the base hash is checked) or a whole checkpoint (full or freeze methods).
    """
    from speechtl.models.ct2 import export_ct2

    exp, out = Path(exp), Path(out)
    train_dir = _train_dir(exp)
    summary = json.loads((train_dir / "summary.json").read_text(encoding="utf-8"))
    model_dir = train_dir / "model"
    card: dict[str, Any] = {"method": summary.get("method"), "base_model": summary.get("base_model")}
    if is_adapter_dir(model_dir):  # refused before the base is loaded
        adapter = read_card(model_dir)
        config = json.loads((model_dir / CONFIG).read_text(encoding="utf-8"))
        if config.get("peft_type") == BOTTLENECK_TYPE or adapter.get("kind") == "bottleneck":
            _refuse_bottleneck(str(model_dir), adapter.get("name") or "default")
        card.update(base_model=adapter.get("base_model"), base_sha256=adapter.get("base_sha256"),
                    adapter={"kind": adapter.get("kind"), "merged": True},
                    training_data=adapter.get("training_data"), name=adapter.get("name"), accent=adapter.get("accent"))
        if adapter.get("gate"):  # a merged model has no base left to fall back on: say so, loudly and in the card
            card["gate"] = {"applied": False, "threshold": adapter["gate"]["threshold"],
                            "note": "the experiment decodes through a confidence gate (base model first); this model "
                                    "is the adapter alone, whose WER is `speechtl eval --gate off`'s, not test_sets'"}
            LOG.warning("%s: its confidence gate can't be exported to CTranslate2 (a merged model has no base to fall "
                        "back on): the export is the adapter alone, as `speechtl eval --gate off` measures it",
                        model_dir)
    else:
        accents = summary.get("train_accents") or {}
        card.update(training_data={"utterances": summary.get("train_utterances"), "hours": summary.get("train_hours"),
                                   "speakers": summary.get("train_speakers"), "accents": accents},
                    name=adapter_name(accents), accent=next(iter(accents), None))
    card.update(_experiment_card(exp, summary, accent, name))
    model = merge_for_serving(load(str(model_dir)))
    card = export_ct2(model, out, quantization, card)
    LOG.info("exported %s (%s) to CTranslate2 %s in %s", exp, summary.get("method"), quantization, out)
    return card
