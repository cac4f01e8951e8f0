"""Adaptation methods: which parameters train. ``full`` trains all; ``freeze`` freezes named parts.

Parts come from the model family (:meth:`SpeechModel.parts`), so this file never asks which
family it holds. An unknown part is an error listing the known ones, never silently ignored.
"""

from __future__ import annotations

import logging

from speechtl.adapt.config import ConfigError, TrainConfig
from speechtl.models.base import SpeechModel

LOG = logging.getLogger("speechtl.adapt")


def apply_method(model: SpeechModel, cfg: TrainConfig) -> dict[str, int]:
    """Set ``requires_grad`` for ``cfg.method`` and return trainable/total parameter counts."""
    for p in model.module.parameters():
        p.requires_grad_(True)
    if cfg.method == "freeze":
        parts = model.parts()
        unknown = [name for name in cfg.freeze if name not in parts]
        if unknown:
            raise ConfigError(f"freeze: unknown part(s) {unknown}; this {model.family} model has: {sorted(parts)}")
        for name in cfg.freeze:
            for p in parts[name]:
                p.requires_grad_(False)
    counts = {"trainable_parameters": model.num_parameters(trainable_only=True),
              "total_parameters": model.num_parameters()}
    if counts["trainable_parameters"] == 0:
        raise ConfigError(f"method '{cfg.method}' with freeze {cfg.freeze} leaves nothing to train")
    LOG.info("method %s%s: %d of %d parameters trainable (%.1f%%)", cfg.method,
             f" (frozen: {', '.join(cfg.freeze)})" if cfg.freeze else "", counts["trainable_parameters"],
             counts["total_parameters"], 100 * counts["trainable_parameters"] / counts["total_parameters"])
    return counts
