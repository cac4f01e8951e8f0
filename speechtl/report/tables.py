"""Markdown formatting shared by RESULTS.md and COMPARE.md: percentages, intervals, verdicts.

Rates are shown in percent with two decimals; an interval follows its value in brackets; a dash
stands for a figure the data can't give (no after-run, nothing to resample). A dagger marks an interval
over utterances, where a set or accent has a single speaker.
"""

from __future__ import annotations

from collections.abc import Sequence

from speechtl.evaluate.stats import Estimate, PairedResult

DASH = "–"


def pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return DASH
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def rel(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:+.1f}%"


def ci_label(level: float) -> str:
    return f"[{100 * level:g}% CI]"


def with_ci(e: Estimate | None, signed: bool = False) -> str:
    """``12.34 [10.10, 14.50]`` (percent), or the value alone when there is no interval."""
    if e is None:
        return DASH
    if e.low is None or e.high is None:
        return pct(e.value, signed)
    return f"{pct(e.value, signed)} [{pct(e.low, signed)}, {pct(e.high, signed)}]"


def rel_ci(e: Estimate | None) -> str:
    if e is None:
        return DASH
    if e.low is None or e.high is None:
        return rel(e.value)
    return f"{rel(e.value)} [{rel(e.low)}, {rel(e.high)}]"


def prob(p: float | None) -> str:
    return DASH if p is None else f"{p:.3f}"


def verdict(r: PairedResult) -> str:
    """A plain word for a paired change, decided by whether the interval of the change excludes zero."""
    e = r.abs_change
    if e.low is None or e.high is None:
        return "cannot tell (too little data to resample)"
    level = f"{100 * r.config.level:g}%"
    if e.high < 0:
        return f"better ({level} CI of the change is below 0)"
    if e.low > 0:
        return f"worse ({level} CI of the change is above 0)"
    return f"no clear change ({level} CI of the change includes 0)"


def unit_mark(r: PairedResult | None) -> str:
    """`` †`` when the interval resamples utterances rather than speakers (a one-speaker set or accent)."""
    return " †" if r is not None and r.unit == "utterance" else ""


UTTERANCE_NOTE = ("† one speaker only: the interval resamples that speaker's utterances, so it speaks for this "
                  "speaker, not for the accent.")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> list[str]:
    """A markdown table; ``align`` has one character per column, ``l`` or ``r`` (default: first column left,
    the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|",
            *["| " + " | ".join(str(c) for c in row) + " |" for row in rows]]


def cell(text: str) -> str:
    """Text safe inside a table cell (pipes escaped, newlines flattened)."""
    return text.replace("|", "\\|").replace("\n", " ")
