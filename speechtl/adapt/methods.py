"""Applying an adaptation method: which parameters train, and what a run saves.

The methods and their settings are entries of :mod:`speechtl.adapt.registry`; this module applies them.

- ``full`` trains every weight; ``freeze`` all but the named parts (from :meth:`SpeechModel.parts`,
  so this file never asks which family it holds; an unknown part is an error listing the known ones).
  Both save whole checkpoints.
- The adapter methods (``lora`` and ``dora`` through PEFT, ``adapters``: residual bottlenecks) freeze the
  base and train a small adapter built from the entry's spec (see :mod:`speechtl.adapt.adapters`); they
  save the adapter alone, with a card naming the base and the SHA-256 of its weights.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speechtl.adapt.adapters import AdapterSet
from speechtl.adapt.config import ConfigError, TrainConfig
from speechtl.adapt.registry import ADAPTER_METHODS
from speechtl.data.manifest import Utterance
from speechtl.models.base import SpeechModel

LOG = logging.getLogger("speechtl.adapt")

#: The name a training run gives its adapter; a product names adapters when it loads them.
TRAINED = "default"


def prepare_base(model: SpeechModel, cfg: TrainConfig) -> None:
    """Before the model changes at all: an adapter method hashes the base weights it will be tied to.

    A model that comes with an active LoRA adapter (``--model`` an adapted experiment: a second accent on
    top of a first) has it folded into its weights first, so every method adapts the adapted model: full
    and freeze save the result whole, a new adapter records what it was stacked on
    (:mod:`speechtl.adapt.adapters`). A bottleneck adapter can't be folded in and is refused.
    """
    aset = model.adapters if isinstance(model.adapters, AdapterSet) else None
    if aset is not None and aset.active is not None:
        if aset.kinds[aset.active] != "lora":
            raise ConfigError(f"the model given ({model.source}) carries bottleneck adapter '{aset.active}', which "
                              "can't be folded into the weights to adapt further; continue from a LoRA, full or "
                              "freeze experiment, or from the base model")
        LOG.info("the model carries adapter '%s': folded into the weights, this run adapts the result", aset.active)
        aset.merge()
    if cfg.method in ADAPTER_METHODS:
        AdapterSet.of(model)


def _expand(name: str, parts: dict[str, Any]) -> list[str]:
    """``encoder.layers.:N`` names the first N layers of a stack; any other name stands for itself."""
    m = re.fullmatch(r"(\w+)\.layers\.:(\d+)", name)
    if not m:
        return [name]
    stack, n = m.group(1), int(m.group(2))
    have = sum(1 for k in parts if re.fullmatch(rf"{stack}\.layers\.\d+", k))
    if not 0 < n <= have:
        raise ConfigError(f"freeze: '{name}' asks for the first {n} of {have} {stack} layers")
    return [f"{stack}.layers.{i}" for i in range(n)]


def apply_method(model: SpeechModel, cfg: TrainConfig, vocabulary: str = "kept") -> dict[str, int]:
    """Set what trains for ``cfg.method`` and return trainable/total parameter counts."""
    if cfg.method in ADAPTER_METHODS:
        if vocabulary == "rebuilt":
            raise ConfigError(f"method '{cfg.method}': the target texts needed a new CTC vocabulary and output "
                              "head, which an adapter can't carry; use method full or freeze, or a base whose "
                              "vocabulary covers the text")
        adapters = AdapterSet.of(model)
        try:
            adapters.add(TRAINED, cfg.entry.build_spec(cfg.settings))
        except ValueError as e:
            raise ConfigError(f"method '{cfg.method}': {e}") from e
        adapters.train_only(TRAINED)
    else:
        for p in model.module.parameters():
            p.requires_grad_(True)
    if cfg.frozen:
        parts = model.parts()
        names = [n for name in cfg.frozen for n in _expand(name, parts)]
        unknown = [name for name in names if name not in parts]
        if unknown:
            raise ConfigError(f"freeze: unknown part(s) {unknown}; this {model.family} model has: {sorted(parts)} "
                              "(and STACK.layers.:N for the first N layers)")
        for name in names:
            for p in parts[name]:
                p.requires_grad_(False)
    counts = {"trainable_parameters": model.num_parameters(trainable_only=True),
              "total_parameters": model.num_parameters()}
    if counts["trainable_parameters"] == 0:
        raise ConfigError(f"method '{cfg.method}' with freeze {cfg.frozen} leaves nothing to train")
    LOG.info("method %s%s: %d of %d parameters trainable (%.2f%%)", cfg.method,
             f" (frozen: {', '.join(cfg.frozen)})" if cfg.frozen else "", counts["trainable_parameters"],
             counts["total_parameters"], 100 * counts["trainable_parameters"] / counts["total_parameters"])
    return counts


def data_summary(utts: Sequence[Utterance]) -> dict[str, Any]:
    """What an adapter card says about its training data."""
    accents = Counter(u.accent for u in utts)
    return {"utterances": len(utts), "hours": round(sum(u.duration for u in utts) / 3600, 4),
            "speakers": len({u.speaker for u in utts}), "accents": dict(accents.most_common())}


def adapter_name(accents: dict[str, int]) -> str:
    """The name an exported adapter loads under by default: its training data's main accent."""
    if not accents:
        return "default"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", max(accents, key=accents.get)) or "default"


def save_trained(model: SpeechModel, cfg: TrainConfig, out_dir: Path, card: dict[str, Any]) -> None:
    """Write what the run trained: a whole checkpoint, or (adapter methods) the adapter and its card."""
    if cfg.method in ADAPTER_METHODS:
        AdapterSet.of(model).save(TRAINED, out_dir, {"method": cfg.method, **card})
    else:
        model.save(out_dir)


def restore_trained(model: SpeechModel, cfg: TrainConfig, saved: Path) -> SpeechModel:
    """The model with the weights :func:`save_trained` wrote to ``saved`` (the best checkpoint)."""
    if cfg.method in ADAPTER_METHODS:
        AdapterSet.of(model).load_weights(TRAINED, saved)
        return model
    from speechtl.models import load_model

    best = load_model(str(saved), device=str(model.device))
    best.source, best.name_or_path = model.source, model.name_or_path
    return best
