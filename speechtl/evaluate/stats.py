"""How sure are we? Bootstrap confidence intervals for WER, resampling speakers rather than utterances.

One speaker's utterances share a voice, an accent and a microphone, so their errors are correlated;
resampling utterances as if they were independent gives intervals that are too narrow. Here the
resampled unit is a *block* (a speaker, by default): each bootstrap replicate draws as many blocks
as there are, with replacement, and its WER is ``sum(errors) / sum(reference words)`` over the
drawn blocks, exactly as the corpus WER is computed (Bisani & Ney 2004, "Bootstrap estimates for
confidence intervals in ASR performance evaluation", with speakers as blocks).

A *paired* comparison draws the same blocks for both systems in every replicate, so what the two
systems share (hard speakers, easy speakers) cancels out of the difference. The probability that
the adapted system is better is the share of replicates in which it makes fewer errors, ties
counted half, so two identical systems score exactly 0.5.

Everything works on per-block count arrays with numpy, so 100,000 utterances take well under a
second; the same seed gives the same figures, bit for bit. Seeds of sub-comparisons (a set, an
accent) are derived from the seed and their names, so adding a test set doesn't move the others.

>>> b = BlockCounts(["s1", "s2", "s3"], np.array([5, 3, 4]), np.array([20, 20, 20]))
>>> a = BlockCounts(["s1", "s2", "s3"], np.array([2, 1, 2]), np.array([20, 20, 20]))
>>> r = paired_bootstrap(b, a, BootstrapConfig(n_boot=500, seed=1))
>>> r.p_better, round(r.before.value, 3), round(r.after.value, 3)
(1.0, 0.2, 0.083)
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from speechtl.errors import ResultsError, UsageError

# Index matrices are drawn this many cells at a time, to bound memory whatever the number of blocks.
_CELLS_PER_CHUNK = 2_000_000


@dataclass(frozen=True)
class BootstrapConfig:
    """How many replicates, which seed, which coverage; identical settings give identical figures."""

    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.n_boot < 1:
            raise UsageError(f"n_boot must be at least 1, got {self.n_boot}")
        if not 0 < self.level < 1:
            raise UsageError(f"level must be between 0 and 1 (e.g. 0.95), got {self.level}")

    def derive(self, *names: str) -> BootstrapConfig:
        """The same settings with a seed that depends on ``names`` (stable across runs and machines)."""
        salt = zlib.crc32("\x1f".join(names).encode("utf-8"))
        return BootstrapConfig(self.n_boot, (self.seed * 1_000_003 + salt) % 2**32, self.level)

    def to_dict(self) -> dict:
        return {"n_boot": self.n_boot, "seed": self.seed, "level": self.level}


@dataclass
class BlockCounts:
    """Errors and reference units per block (speaker or utterance), the only input the bootstrap needs."""

    names: list[str]
    errors: np.ndarray
    ref: np.ndarray
    unit: str = "speaker"

    def __post_init__(self) -> None:
        self.errors = np.asarray(self.errors, dtype=np.int64)
        self.ref = np.asarray(self.ref, dtype=np.int64)
        if not len(self.names) == len(self.errors) == len(self.ref):
            raise ValueError(f"block counts disagree in length: {len(self.names)} names, {len(self.errors)} "
                             f"error counts, {len(self.ref)} reference counts")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def rate(self) -> float:
        return float(_rates(np.array([self.errors.sum()]), np.array([self.ref.sum()]))[0])

    def subset(self, names: Iterable[str]) -> BlockCounts:
        pos = {n: i for i, n in enumerate(self.names)}
        idx = [pos[n] for n in names]
        return BlockCounts([self.names[i] for i in idx], self.errors[idx], self.ref[idx], self.unit)

    @classmethod
    def concat(cls, parts: Mapping[str, BlockCounts]) -> BlockCounts:
        """Pool several test sets into one; block names get their set's name so they stay distinct."""
        items = list(parts.items())
        return cls([f"{k}/{n}" for k, b in items for n in b.names],
                   np.concatenate([b.errors for _, b in items]) if items else np.zeros(0),
                   np.concatenate([b.ref for _, b in items]) if items else np.zeros(0),
                   items[0][1].unit if items else "speaker")


def word_blocks(rows: Iterable[dict], by: str | None = "speaker") -> BlockCounts:
    """Word-error blocks from scored rows (``sub``, ``del``, ``ins``, ``ref_words``, as in ``hyp.jsonl``).

    ``by=None`` makes every utterance its own block (for an interval within one speaker).
    """
    errors: dict[str, int] = {}
    ref: dict[str, int] = {}
    for r in rows:
        key = r["id"] if by is None else str(r.get(by, ""))
        errors[key] = errors.get(key, 0) + r["sub"] + r["del"] + r["ins"]
        ref[key] = ref.get(key, 0) + r["ref_words"]
    names = sorted(errors)
    return BlockCounts(names, np.array([errors[n] for n in names]), np.array([ref[n] for n in names]),
                       "utterance" if by is None else by)


def resampling_blocks(rows: Iterable[dict]) -> BlockCounts:
    """Speakers as blocks; a set (or accent) of one speaker can only be resampled by its utterances, and its
    interval then speaks for that speaker alone (the block unit, recorded with every result, says which)."""
    rows = list(rows)
    by_speaker = word_blocks(rows, "speaker")
    return by_speaker if len(by_speaker) >= 2 else word_blocks(rows, None)


def group_blocks(groups: Mapping[str, Mapping[str, Mapping[str, int]]], metric: str, unit: str = "speaker"
                 ) -> BlockCounts:
    """Blocks from a ``scores.json`` group table (``per_speaker``), e.g. for CER, whose per-utterance
    counts ``hyp.jsonl`` doesn't keep."""
    names = sorted(groups)
    return BlockCounts(names, np.array([groups[n][metric]["errors"] for n in names]),
                       np.array([groups[n][metric]["ref"] for n in names]), unit)


def _rates(errors: np.ndarray, ref: np.ndarray) -> np.ndarray:
    # As ErrorCounts.rate: an empty reference with insertions is 100%.
    safe = np.where(ref > 0, ref, 1)
    return np.where(ref > 0, errors / safe, (errors > 0).astype(float))


def _rel_change(before: np.ndarray, after: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(after − before) / before; where before has no errors the ratio is undefined and the absolute
    change (after − before) / ref is used instead, so the figure stays finite."""
    safe = np.where(before > 0, before, 1)
    return np.where(before > 0, (after - before) / safe, _rates(after - before, ref))


def resampled_sums(arrays: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Sums of each array over the same ``n_boot`` resamples (with replacement) of its positions.

    All arrays are indexed by the same blocks, so they are resampled together: this is what makes a
    comparison paired.
    """
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("arrays resampled together must have one entry per block each")
    rng = np.random.default_rng(seed)
    out = [np.empty(n_boot, dtype=np.int64) for _ in arrays]
    step = max(1, _CELLS_PER_CHUNK // max(n, 1))
    for start in range(0, n_boot, step):
        m = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        for a, o in zip(arrays, out, strict=True):
            o[start:start + m] = a[idx].sum(axis=1)
    return out


@dataclass
class Estimate:
    """A point value (from all the data) and its bootstrap interval; ``low``/``high`` are None when the
    data can't give one (fewer than two blocks)."""

    value: float
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_rate(blocks: BlockCounts, cfg: BootstrapConfig) -> Estimate:
    """The error rate of one system with its percentile interval over resampled blocks."""
    if len(blocks) < 2:
        return Estimate(blocks.rate)
    err, ref = resampled_sums([blocks.errors, blocks.ref], cfg.n_boot, cfg.seed)
    return Estimate(blocks.rate, *_interval(_rates(err, ref), cfg.level))


@dataclass
class PairedResult:
    """Before and after on the same blocks: both rates, the change, and P(after is better)."""

    before: Estimate
    after: Estimate
    abs_change: Estimate
    rel_change: Estimate
    p_better: float | None
    blocks: int
    unit: str
    config: BootstrapConfig = field(default_factory=BootstrapConfig)

    def to_dict(self) -> dict:
        return {"before": self.before.to_dict(), "after": self.after.to_dict(),
                "abs_change": self.abs_change.to_dict(), "rel_change": self.rel_change.to_dict(),
                "p_after_better": self.p_better, "blocks": self.blocks, "block_unit": self.unit,
                **self.config.to_dict()}


def check_same_blocks(before: BlockCounts, after: BlockCounts, what: str = "") -> None:
    """A paired comparison needs the same blocks with the same references on both sides."""
    if before.names != after.names:
        only_b = sorted(set(before.names) - set(after.names))[:5]
        only_a = sorted(set(after.names) - set(before.names))[:5]
        raise ResultsError(f"{what or 'paired comparison'}: the two systems were scored on different {before.unit}s "
                           f"(only in the first: {only_b}, only in the second: {only_a}); score both on the same "
                           "manifest")
    if not np.array_equal(before.ref, after.ref):
        bad = [n for n, x, y in zip(before.names, before.ref, after.ref, strict=True) if x != y][:5]
        raise ResultsError(f"{what or 'paired comparison'}: reference lengths differ for {before.unit}(s) {bad}; "
                           "the two systems were not scored against the same references (or normaliser)")


def paired_bootstrap(before: BlockCounts, after: BlockCounts, cfg: BootstrapConfig, what: str = "") -> PairedResult:
    """Paired speaker-block bootstrap of the WER change from ``before`` to ``after``.

    Intervals are percentile intervals at ``cfg.level``; ``p_better`` = P(after < before) + ½ P(tie)
    over the replicates. With fewer than two blocks there is nothing to resample: the intervals and
    the probability are None rather than a confident-looking zero-width interval.
    """
    check_same_blocks(before, after, what)
    eb, ea, ref = before.errors.sum(), after.errors.sum(), before.ref.sum()
    point_rel = float(_rel_change(np.array([eb]), np.array([ea]), np.array([ref]))[0])
    point = PairedResult(Estimate(before.rate), Estimate(after.rate), Estimate(after.rate - before.rate),
                         Estimate(point_rel), None, len(before), before.unit, cfg)
    if len(before) < 2:
        return point
    sb, sa, sr = resampled_sums([before.errors, after.errors, before.ref], cfg.n_boot, cfg.seed)
    rb, ra = _rates(sb, sr), _rates(sa, sr)
    point.before = Estimate(before.rate, *_interval(rb, cfg.level))
    point.after = Estimate(after.rate, *_interval(ra, cfg.level))
    point.abs_change = Estimate(after.rate - before.rate, *_interval(ra - rb, cfg.level))
    point.rel_change = Estimate(point_rel, *_interval(_rel_change(sb, sa, sr), cfg.level))
    point.p_better = float(np.mean(sa < sb) + 0.5 * np.mean(sa == sb))
    return point


FORGETTING_FORMULA = ("score = G − λ · max(0, D − τ), where G = (WER_before − WER_after) / WER_before on the "
                      "target set(s), pooled; D = the largest (WER_after − WER_before) / WER_before over the "
                      "source/general sets; λ = penalty weight; τ = tolerated relative increase")


@dataclass
class ForgettingScore:
    """One number for "did adaptation pay?": the target gain, less the source damage beyond a tolerance.

    In the spirit of NeMo's adapter analysis ("damage control"): a method that gains 30% on the
    accent but breaks ordinary speech should not rank above one that gains 25% and breaks nothing.
    Relative changes keep sets of different difficulty comparable.
    """

    gain: Estimate
    damage: Estimate | None
    score: Estimate
    weight: float
    tolerance: float
    target_sets: list[str]
    source_sets: list[str]
    damage_by_set: dict[str, float] = field(default_factory=dict)
    formula: str = FORGETTING_FORMULA

    def to_dict(self) -> dict:
        return {"formula": self.formula, "weight": self.weight, "tolerance": self.tolerance,
                "target_sets": self.target_sets, "source_sets": self.source_sets,
                "target_gain": self.gain.to_dict(), "source_damage": self.damage.to_dict() if self.damage else None,
                "source_damage_by_set": self.damage_by_set, "score": self.score.to_dict()}


def _gain_samples(before: BlockCounts, after: BlockCounts, cfg: BootstrapConfig) -> tuple[float, np.ndarray | None]:
    """Relative WER reduction, point and (when resampling is possible) its replicates."""
    eb, ea, ref = (np.array([x.sum()]) for x in (before.errors, after.errors, before.ref))
    # "+ 0.0" turns the -0.0 of an unchanged WER into 0.0, which prints without a misleading sign.
    point = float(-_rel_change(eb, ea, ref)[0]) + 0.0
    if len(before) < 2:
        return point, None
    sb, sa, sr = resampled_sums([before.errors, after.errors, before.ref], cfg.n_boot, cfg.seed)
    return point, -_rel_change(sb, sa, sr) + 0.0


def forgetting_score(targets: Mapping[str, tuple[BlockCounts, BlockCounts]],
                     sources: Mapping[str, tuple[BlockCounts, BlockCounts]], cfg: BootstrapConfig,
                     weight: float = 1.0, tolerance: float = 0.05) -> ForgettingScore:
    """Combined score (see :data:`FORGETTING_FORMULA`) with a bootstrap interval.

    Target sets are pooled (their speakers are distinct people); each source set is resampled on
    its own, and the worst one counts, so a large easy set can't hide damage on a small one.
    """
    if not targets:
        raise UsageError("the forgetting score needs at least one test set with role 'target'")
    for name, (b, a) in {**targets, **sources}.items():
        check_same_blocks(b, a, f"test set {name}")
    pooled_b = BlockCounts.concat({k: v[0] for k, v in targets.items()})
    pooled_a = BlockCounts.concat({k: v[1] for k, v in targets.items()})
    gain, gain_s = _gain_samples(pooled_b, pooled_a, cfg.derive("forgetting", "target"))
    damage_pts: dict[str, float] = {}
    damage_s: list[np.ndarray | None] = []
    for name, (b, a) in sorted(sources.items()):
        g, s = _gain_samples(b, a, cfg.derive("forgetting", "source", name))
        damage_pts[name] = -g
        damage_s.append(None if s is None else -s)
    damage = max(damage_pts.values()) if damage_pts else None
    score = gain - weight * max(0.0, damage - tolerance) if damage is not None else gain
    d_est = None if damage is None else Estimate(damage)
    g_est, s_est = Estimate(gain), Estimate(score)
    if gain_s is not None and all(s is not None for s in damage_s):
        g_est = Estimate(gain, *_interval(gain_s, cfg.level))
        if damage_s:
            d_rep = np.max(np.stack(damage_s), axis=0)
            d_est = Estimate(damage, *_interval(d_rep, cfg.level))
            s_est = Estimate(score, *_interval(gain_s - weight * np.maximum(0.0, d_rep - tolerance), cfg.level))
        else:
            s_est = g_est
    return ForgettingScore(g_est, d_est, s_est, weight, tolerance, sorted(targets), sorted(sources), damage_pts)


def kaldi_bootci(name: str, result: PairedResult, metric: str = "WER") -> str:
    """Lines in the spirit of Kaldi's ``compute-wer-bootci`` output (the ``wer_bootci`` file)."""
    pct = 100 * result.config.level

    def ci(e: Estimate) -> str:
        return "n/a" if e.low is None else f"[ {100 * e.low:.2f}, {100 * e.high:.2f} ]"

    p = "n/a" if result.p_better is None else f"{100 * result.p_better:.1f}%"
    return (f"# {name}: {result.blocks} {result.unit}s resampled, {result.config.n_boot} replicates, "
            f"derived seed {result.config.seed}\n"
            f"Set1 (before): %{metric} {100 * result.before.value:.2f} {pct:g}% Conf Interval {ci(result.before)}\n"
            f"Set2 (after): %{metric} {100 * result.after.value:.2f} {pct:g}% Conf Interval {ci(result.after)}\n"
            f"Change (after - before): {100 * result.abs_change.value:+.2f} {pct:g}% Conf Interval "
            f"{ci(result.abs_change)}\n"
            f"Probability of Set2 improving Set1: {p}\n")


def kaldi_bootci_single(est: Estimate, cfg: BootstrapConfig, blocks: int, metric: str = "WER") -> str:
    """One system's line of a ``wer_bootci`` file."""
    ci = "n/a (fewer than 2 speakers)" if est.low is None else f"[ {100 * est.low:.2f}, {100 * est.high:.2f} ]"
    return (f"%{metric} {100 * est.value:.2f} {100 * cfg.level:g}% Conf Interval {ci} "
            f"# {blocks} speakers resampled, {cfg.n_boot} replicates, --seed {cfg.seed}\n")
