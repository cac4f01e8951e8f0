"""Calibrate an adapted experiment's confidence gate on dev sets, and write it into the adapter's card.

Two decodes of each dev set are enough for every threshold: one through a gate that keeps everything it can
on the base model (threshold −inf: the base's transcript and its confidence per utterance; a looping one
already goes to the adapter), one by the adapter alone. The gated system at threshold ``t`` then takes, per
utterance, the first when the base's confidence is at least ``t`` and the second otherwise, so its WER at
every ``t`` is counted from the two sets of errors without decoding again.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.adapt.config import GateConfig
from speechtl.data.manifest import Utterance
from speechtl.evaluate.decode import DecodeOptions, transcribe_utterances
from speechtl.evaluate.evaldir import score_hypotheses
from speechtl.io import write_json
from speechtl.models.base import SpeechModel
from speechtl.models.gate import Gate

LOG = logging.getLogger("speechtl.evaluate")
#: Bumped when calibration or the gate's decoding changes what a calibration finds: a gate calibrated under
#: another revision is calibrated again (2: a Whisper transcript ending exactly at a batch's longest no longer
#: counts as cut off).
REVISION = 2


@dataclass
class DevRoutes:
    """Per utterance of one dev set: the base's confidence, its errors through the gate at −inf (base unless it
    loops), the adapter's errors, and the reference length."""

    confidence: np.ndarray
    base_errors: np.ndarray
    adapter_errors: np.ndarray
    ref_words: int

    def wer(self, threshold: float) -> float:
        keep = self.confidence >= threshold
        return float(np.where(keep, self.base_errors, self.adapter_errors).sum()) / max(1, self.ref_words)

    def to_adapter(self, threshold: float) -> int:
        return int((self.confidence < threshold).sum())

    def summary(self, threshold: float) -> dict[str, Any]:
        return {"utterances": len(self.confidence), "to_adapter": self.to_adapter(threshold),
                "wer_gated": round(self.wer(threshold), 4), "wer_adapter": round(self.wer(math.inf), 4),
                "wer_base": round(self.wer(-math.inf), 4)}


def dev_routes(model: SpeechModel, utts: Sequence[Utterance], opts: DecodeOptions, max_compression_ratio: float,
               desc: str = "gate") -> DevRoutes:
    """Decode ``utts`` both ways (see the module docstring) and count each utterance's errors."""
    routes: dict[str, dict] = {}
    model.gate = Gate(-math.inf, max_compression_ratio)
    try:
        base = transcribe_utterances(model, utts, opts, desc=f"{desc} (base)", routes=routes)
    finally:
        model.gate = None
    adapted = transcribe_utterances(model, utts, opts, desc=f"{desc} (adapter)")

    def errors(hyps: dict[str, str]) -> tuple[np.ndarray, int]:
        rows = score_hypotheses(utts, hyps, opts.normalizer)[0]
        return np.array([r["sub"] + r["del"] + r["ins"] for r in rows]), sum(r["ref_words"] for r in rows)

    (base_err, ref), (adapter_err, _) = errors(base), errors(adapted)
    # a looping base transcript went to the adapter already: it does so at every threshold
    # (confidence None: the base transcript did not end, which no finite threshold keeps either)
    conf = np.array([routes[u.id]["confidence"] if routes[u.id]["gate"] == "base" and
                     routes[u.id]["confidence"] is not None else -math.inf for u in utts])
    return DevRoutes(conf, base_err, adapter_err, ref)


def choose_threshold(cfg: GateConfig, target: DevRoutes, general: DevRoutes | None = None) -> tuple[float, str]:
    """The threshold ``cfg`` asks for (see :class:`~speechtl.adapt.config.GateConfig`), and the rule that chose it."""
    if cfg.threshold is not None:
        return cfg.threshold, "fixed"
    if cfg.weight > 0:
        if general is None:
            raise ValueError("gate.weight > 0 needs a general dev set")
        finite = np.concatenate([target.confidence, general.confidence])
        finite = np.unique(finite[np.isfinite(finite)])
        # midpoints between neighbouring confidences, and beyond both ends: every distinct split once
        cands = np.concatenate([[finite[0] - 1.0], (finite[1:] + finite[:-1]) / 2, [finite[-1] + 1.0]]) \
            if len(finite) else np.array([0.0])
        scores = np.array([(1 - cfg.weight) * target.wer(t) + cfg.weight * general.wer(t) for t in cands])
        best = np.flatnonzero(scores <= scores.min() + 1e-12)
        return float(cands[best[len(best) // 2]]), "weighted"  # the middle of a tie: away from both edges
    finite = target.confidence[np.isfinite(target.confidence)]
    if not len(finite):  # the base loops on every dev utterance: nothing to keep on it
        return float(np.finfo(np.float64).max), "base_share"
    return float(np.quantile(finite, 1.0 - cfg.base_share)), "base_share"


def calibrate(model: SpeechModel, cfg: GateConfig, dev: Sequence[Utterance],
              general: Sequence[Utterance] | None = None, batch_size: int = 16) -> Gate:
    """A gate for ``model`` (its active adapter) chosen on the target ``dev`` set (and ``general`` dev speech)."""
    opts = DecodeOptions(batch_size=batch_size)
    target = dev_routes(model, dev, opts, cfg.max_compression_ratio, "gate: dev")
    gen = dev_routes(model, general, opts, cfg.max_compression_ratio, "gate: general dev") \
        if general and cfg.weight > 0 else None
    threshold, rule = choose_threshold(cfg, target, gen)
    calibration: dict[str, Any] = {"rule": rule, "config": cfg.to_dict(), "revision": REVISION,
                                   "dev": target.summary(threshold)}
    if gen is not None:
        calibration["general_dev"] = gen.summary(threshold)
    gate = Gate(threshold, cfg.max_compression_ratio, calibration)
    LOG.info("gate: threshold %.4f (%s); target dev: %d of %d utterances to the adapter, WER %.2f%% gated, %.2f%% "
             "adapter alone, %.2f%% base", threshold, rule, calibration["dev"]["to_adapter"], len(dev),
             100 * calibration["dev"]["wer_gated"], 100 * calibration["dev"]["wer_adapter"],
             100 * calibration["dev"]["wer_base"])
    return gate


def gate_experiment(exp: str | Path, cfg: GateConfig | None, dev: Sequence[Utterance],
                    general: Sequence[Utterance] | None = None, batch_size: int = 16) -> dict[str, Any] | None:
    """Calibrate the gate of training dir ``exp`` (its ``model/`` adapter) and write it into the adapter's card and
    ``summary.json``; skipped when both already hold a gate calibrated under ``cfg``. ``cfg`` None removes a gate.
    """
    from speechtl.adapt.adapters import load, read_card, write_card

    exp = Path(exp)
    summary = json.loads((exp / "summary.json").read_text(encoding="utf-8"))
    card = read_card(exp / "model")
    wanted = cfg.to_dict() if cfg is not None else None
    calibration = (card.get("gate") or {}).get("calibration", {})
    have = calibration.get("config") if calibration.get("revision") == REVISION else None
    if wanted == have and (summary.get("gate") or {}).get("calibration", {}) == calibration:
        LOG.info("%s: gate already calibrated with the same settings; skipping", exp)
        return card.get("gate")
    if cfg is None:
        write_card(exp / "model", {"gate": None})
        summary.pop("gate", None)
        write_json(exp / "summary.json", summary)
        return None
    model = load(str(exp / "model"))  # its card's gate, if any, is set aside by dev_routes' decodes
    gate = calibrate(model, cfg, dev, general, batch_size).to_dict()
    write_card(exp / "model", {"gate": gate})
    write_json(exp / "summary.json", {**summary, "gate": gate})
    return gate
