"""PNG figures for RESULTS.md and COMPARE.md, drawn with matplotlib's Agg backend (no display needed).

Each function takes plain numbers (already computed by the statistics), draws one figure and
writes it atomically; error bars are the bootstrap intervals, so a bar without one means the data
could not give an interval (fewer than two speakers), not that there is no uncertainty.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from speechtl.evaluate.stats import Estimate  # noqa: E402
from speechtl.io import atomic_write  # noqa: E402

BEFORE, AFTER = "#9e9e9e", "#1f77b4"


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def _yerr(ests: Sequence[Estimate]) -> list[list[float]]:
    """Asymmetric error bars in percent; zero-length where an estimate has no interval."""
    lo = [100 * (e.value - e.low) if e.low is not None else 0.0 for e in ests]
    hi = [100 * (e.high - e.value) if e.high is not None else 0.0 for e in ests]
    return [lo, hi]


@dataclass
class AccentBar:
    label: str  # "test set / accent"
    before: Estimate
    after: Estimate


def plot_accent_wer(bars: Sequence[AccentBar], path: Path, level: float = 0.95) -> Path:
    """WER per accent (and test set), before and after side by side, with interval bars."""
    fig = Figure(figsize=(max(5.0, 1.3 * len(bars) + 2), 4.2))
    ax = fig.subplots()
    x = list(range(len(bars)))
    w = 0.38
    for shift, attr, color, name in ((-w / 2, "before", BEFORE, "before"), (w / 2, "after", AFTER, "after")):
        ests = [getattr(b, attr) for b in bars]
        ax.bar([i + shift for i in x], [100 * e.value for e in ests], w, yerr=_yerr(ests), capsize=4,
               color=color, label=name)
    ax.set_xticks(x, [b.label for b in bars], rotation=20 if len(bars) > 4 else 0, ha="right" if len(bars) > 4
                  else "center")
    ax.set_ylabel("WER (%)")
    ax.set_title(f"WER per accent before and after adaptation\n({100 * level:g}% CI, bootstrap over speakers)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


@dataclass
class SpeakerPoint:
    test_set: str
    speaker: str
    before: float
    after: float


def plot_speaker_scatter(points: Sequence[SpeakerPoint], path: Path) -> Path:
    """Each speaker's WER before (x) against after (y); below the diagonal the adaptation helped them."""
    fig = Figure(figsize=(5.2, 5.0))
    ax = fig.subplots()
    top = max([100 * max(p.before, p.after) for p in points] + [1.0]) * 1.08
    ax.plot([0, top], [0, top], color="black", lw=0.8, ls="--", label="no change")
    for name in sorted({p.test_set for p in points}):
        mine = [p for p in points if p.test_set == name]
        ax.scatter([100 * p.before for p in mine], [100 * p.after for p in mine], label=name, s=28, alpha=0.8)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("WER before (%)")
    ax.set_ylabel("WER after (%)")
    ax.set_title("Per speaker: below the line = better after adaptation")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


@dataclass
class MethodPoint:
    label: str
    trainable: int | None  # None: not adapted (a base model or an external system)
    wer: Estimate


def plot_wer_vs_params(panels: dict[str, Sequence[MethodPoint]], path: Path, level: float = 0.95) -> Path:
    """For ``compare``: WER against trainable parameters per test set; systems without adaptation are
    horizontal reference lines (they have no trainable parameters to place on a log axis)."""
    n = max(len(panels), 1)
    fig = Figure(figsize=(5.0 * n, 4.2))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, pts) in zip(axes, sorted(panels.items()), strict=False):
        adapted = [p for p in pts if p.trainable]
        for p in pts:
            if not p.trainable:
                ax.axhline(100 * p.wer.value, ls="--", lw=1, color=BEFORE)
                ax.annotate(p.label, (0.01, 100 * p.wer.value), xycoords=("axes fraction", "data"), fontsize=7,
                            va="bottom", color="dimgray")
        if adapted:
            ax.errorbar([p.trainable for p in adapted], [100 * p.wer.value for p in adapted],
                        yerr=_yerr([p.wer for p in adapted]), fmt="o", capsize=4, color=AFTER)
            for p in adapted:
                ax.annotate(p.label, (p.trainable, 100 * p.wer.value), textcoords="offset points", xytext=(5, 5),
                            fontsize=7)
            ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("WER (%)")
        ax.set_title(f"{name} ({100 * level:g}% CI)")
        ax.grid(alpha=0.3)
    return _save(fig, path)
