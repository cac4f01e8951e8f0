"""The confidence gate: each utterance is decoded by the base model first, and only passed to the adapter
when the base model is unsure of it.

An adapter trained on one accent makes other speech worse (forgetting); distillation, replay and WiSE-FT
move a model along the trade-off between accent gain and that loss, but do not leave it. A gate does not
have to: a pretrained recogniser already knows which speech it handles. Whisper itself decides this way
when it falls back to a higher temperature (``logprob_threshold`` −1.0 on the mean token log-probability,
``compression_ratio_threshold`` 2.4 on a looping transcript); the gate uses the same two signals to fall
back from the base model to the adapter instead. The threshold is calibrated after training
(:mod:`speechtl.evaluate.gate`), and written in the adapter's card so that every loader applies it.

A base transcript that did not end within the base pass's limits (:meth:`SpeechModel.gate_limits`: Whisper
reads at most 12 tokens a second) has confidence −inf: it goes to the adapter, and a base model that loops on
the accent costs little time. The base pass runs with the base model's own settings (a pretrained Whisper at
its full 30 s audio context, :attr:`SpeechModel.base_settings`), the adapter pass with the adapter's (its
``model_settings``): each model decodes as it was trained. Only adapter methods can be gated: the base is the
same module with its adapters switched off, so no second copy is held.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Whisper's own loop detector (``compression_ratio_threshold``): a transcript that compresses more than this
#: repeats itself, whatever the model's confidence in it.
MAX_COMPRESSION_RATIO = 2.4


def compression_ratio(text: str) -> float:
    """zlib compression ratio of ``text``, as Whisper computes it (``len(bytes) / len(zlib.compress(bytes))``)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


@dataclass
class Gate:
    """Keep the base model's transcript when its confidence is at least :attr:`threshold` and it does not
    loop; else take the adapter's. What calibration found (:attr:`calibration`) travels with it."""

    threshold: float
    max_compression_ratio: float = MAX_COMPRESSION_RATIO
    calibration: dict[str, Any] = field(default_factory=dict)

    def keeps_base(self, text: str, confidence: float) -> bool:
        return confidence >= self.threshold and compression_ratio(text) < self.max_compression_ratio

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "gate") -> Gate:
        try:
            gate = cls(threshold=float(data["threshold"]),
                       max_compression_ratio=float(data.get("max_compression_ratio", MAX_COMPRESSION_RATIO)),
                       calibration=dict(data.get("calibration") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: a gate needs a numeric 'threshold' (and optionally "
                             f"'max_compression_ratio'), got {dict(data)!r}") from e
        return gate


@dataclass
class Routed:
    """One batch decoded through a gate: each utterance's text, where it went, and the base's confidence."""

    texts: list[str]
    to_adapter: list[bool]
    confidence: list[float]


def route(model, audios: Sequence[np.ndarray], gate: Gate, langs: Sequence[str] | None = None,
          **options: Any) -> Routed:
    """Decode ``audios`` with ``model``'s base (adapters off, base settings), then the unsure ones with its
    active adapter. ``options`` go to both decodes (``num_beams``…)."""
    adapter = model.active_adapter
    if adapter is None:
        raise ValueError(f"{model.source}: a gate routes between the base model and an adapter, but no adapter is "
                         "active (a merged or fully fine-tuned model has no base to fall back on)")
    try:
        model.disable_adapters()
        with model.settings_as(model.base_settings):
            bounded = dict(options)
            for k, limit in model.gate_limits(audios).items():
                bounded[k] = min(limit, bounded.get(k, limit))
            base = model.transcribe_scored(model.collate(audios, langs=langs), **bounded)
    finally:
        model.set_adapter(adapter)
    texts, conf = [t for t, _ in base], [c for _, c in base]
    unsure = [i for i, (t, c) in enumerate(base) if not gate.keeps_base(t, c)]
    if unsure:
        sub_langs = [langs[i] for i in unsure] if langs is not None else None
        adapted = model.transcribe(model.collate([audios[i] for i in unsure], langs=sub_langs), **options)
        for i, text in zip(unsure, adapted, strict=True):
            texts[i] = text
    chosen = set(unsure)
    return Routed(texts, [i in chosen for i in range(len(audios))], conf)
