"""Error analysis: which words go wrong, which adaptation fixed or broke, and Kaldi's text artefacts.

A WER says how much; these say what. Everything is computed from the word alignments of the
normalised texts in ``hyp.jsonl`` rows, so it agrees with the counts the WER was built from.

Kaldi files written here (``steps/scoring/score_kaldi_wer.sh`` in spirit):
``per_spk`` (``wer_per_spk_details.pl``: raw counts and percentages per speaker, then ``SUM``) and
``ops`` (``wer_ops_details.pl``: one line per distinct correct/substitution/deletion/insertion).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speechtl.errors import ResultsError
from speechtl.evaluate.metrics import alignment
from speechtl.io import atomic_write

Alignment = list[tuple[str, str | None, str | None]]
EMPTY = "***"


def align_rows(rows: Iterable[dict]) -> dict[str, Alignment]:
    """Word alignment of every row, by utterance id; computed once and shared by the analyses below."""
    return {r["id"]: alignment(r["ref_norm"], r["hyp_norm"]) for r in rows}


@dataclass
class OpCounts:
    """How often each distinct edit occurs: (ref, hyp) pairs for substitutions, words otherwise."""

    correct: Counter = field(default_factory=Counter)
    substitutions: Counter = field(default_factory=Counter)
    deletions: Counter = field(default_factory=Counter)
    insertions: Counter = field(default_factory=Counter)

    def __add__(self, other: OpCounts) -> OpCounts:
        return OpCounts(self.correct + other.correct, self.substitutions + other.substitutions,
                        self.deletions + other.deletions, self.insertions + other.insertions)

    def to_dict(self, top: int | None = None) -> dict:
        return {"substitutions": [[r, h, n] for (r, h), n in top_items(self.substitutions, top)],
                "deletions": [[w, n] for w, n in top_items(self.deletions, top)],
                "insertions": [[w, n] for w, n in top_items(self.insertions, top)],
                "totals": {"correct": sum(self.correct.values()), "sub": sum(self.substitutions.values()),
                           "del": sum(self.deletions.values()), "ins": sum(self.insertions.values())}}


def top_items(counter: Counter, n: int | None) -> list:
    """The ``n`` most frequent items (all with None), most frequent first."""
    # Ties broken by the item itself, so the order never depends on dict insertion order.
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def op_counts(aligned: Iterable[Alignment]) -> OpCounts:
    out = OpCounts()
    for al in aligned:
        for op, r, h in al:
            if op == "C":
                out.correct[r] += 1
            elif op == "S":
                out.substitutions[(r, h)] += 1
            elif op == "D":
                out.deletions[r] += 1
            else:
                out.insertions[h] += 1
    return out


def ref_word_correct(al: Alignment) -> list[bool]:
    """For each reference word in order, whether the hypothesis got it right."""
    return [op == "C" for op, r, _ in al if r is not None]


@dataclass
class WordChanges:
    """Reference words wrong before and right after (fixed), and the reverse (broken).

    Both systems are aligned to the same reference, so position *i* of the reference is the same
    word on both sides; a word counts once per occurrence.
    """

    fixed: Counter = field(default_factory=Counter)
    broken: Counter = field(default_factory=Counter)

    def to_dict(self, top: int | None = None) -> dict:
        return {"fixed": [[w, n] for w, n in top_items(self.fixed, top)],
                "broken": [[w, n] for w, n in top_items(self.broken, top)],
                "totals": {"fixed": sum(self.fixed.values()), "broken": sum(self.broken.values())}}


def word_changes(before: Mapping[str, Alignment], after: Mapping[str, Alignment]) -> WordChanges:
    out = WordChanges()
    for uid in sorted(before.keys() & after.keys()):
        words = [r for _, r, _ in before[uid] if r is not None]
        ok_b, ok_a = ref_word_correct(before[uid]), ref_word_correct(after[uid])
        if len(ok_b) != len(ok_a):
            raise ResultsError(f"utterance {uid}: the before and after rows have different references "
                               f"({len(ok_b)} vs {len(ok_a)} words); were they scored on the same manifest?")
        for w, b, a in zip(words, ok_b, ok_a, strict=True):
            if a and not b:
                out.fixed[w] += 1
            elif b and not a:
                out.broken[w] += 1
    return out


def aligned_lines(al: Alignment) -> tuple[str, str, str]:
    """Ref, hyp and op lines padded to common column widths (``***`` for a missing word), as in per_utt."""
    cells = [(op, r or EMPTY, h or EMPTY) for op, r, h in al]
    width = [max(len(r), len(h)) for _, r, h in cells]
    ref = " ".join(r.ljust(n) for (_, r, _), n in zip(cells, width, strict=True)).rstrip()
    hyp = " ".join(h.ljust(n) for (_, _, h), n in zip(cells, width, strict=True)).rstrip()
    ops = " ".join(op.ljust(n) for (op, _, _), n in zip(cells, width, strict=True)).rstrip()
    return ref, hyp, ops


def row_errors(row: Mapping) -> int:
    return row["sub"] + row["del"] + row["ins"]


def worst_rows(rows: Sequence[dict], n: int) -> list[dict]:
    """The ``n`` rows with most word errors (then highest utterance WER, then id, for a stable order)."""
    return sorted(rows, key=lambda r: (-row_errors(r), -row_errors(r) / max(r["ref_words"], 1), r["id"]))[:n]


def write_ops(ops: OpCounts, path: Path) -> None:
    """Kaldi's ``ops``: ``correct|substitution|deletion|insertion ref hyp count``, most frequent first."""
    lines = [("correct", w, w, n) for w, n in top_items(ops.correct, None)]
    lines += [("substitution", r, h, n) for (r, h), n in top_items(ops.substitutions, None)]
    lines += [("deletion", w, EMPTY, n) for w, n in top_items(ops.deletions, None)]
    lines += [("insertion", EMPTY, w, n) for w, n in top_items(ops.insertions, None)]
    wr = max([len(x[1]) for x in lines] + [3])
    wh = max([len(x[2]) for x in lines] + [3])
    with atomic_write(path) as f:
        for kind, r, h, n in lines:
            f.write(f"{kind:<13} {r:<{wr}} {h:<{wh}} {n}\n")


def write_per_spk(rows: Iterable[dict], path: Path) -> None:
    """Kaldi's ``per_spk``: per speaker a ``raw`` line of counts and a ``sys`` line of percentages.

    Columns: #SENT #WORD Corr Sub Ins Del Err S.Err (sentences with at least one error).
    """
    acc: dict[str, list[int]] = {}
    for r in rows:
        a = acc.setdefault(str(r["speaker"]), [0] * 7)
        corr = r["ref_words"] - r["sub"] - r["del"]
        for i, v in enumerate((1, r["ref_words"], corr, r["sub"], r["ins"], r["del"], int(row_errors(r) > 0))):
            a[i] += v
    total = [sum(col) for col in zip(*acc.values(), strict=True)] if acc else [0] * 7
    width = max([len(s) for s in acc] + [7])
    head = ["#SENT", "#WORD", "Corr", "Sub", "Ins", "Del", "Err", "S.Err"]
    with atomic_write(path) as f:
        f.write(f"{'SPEAKER':<{width}}  id   " + "".join(f"{h:>9}" for h in head) + "\n")
        for spk, a in [*sorted(acc.items()), ("SUM", total)]:
            sent, words, corr, sub, ins, dele, serr = a
            err = sub + ins + dele
            raw = [sent, words, corr, sub, ins, dele, err, serr]
            pw, ps = max(words, 1), max(sent, 1)
            pct = [f"{100 * x / pw:.2f}" for x in (corr, sub, ins, dele, err)] + [f"{100 * serr / ps:.2f}"]
            f.write(f"{spk:<{width}}  raw  " + "".join(f"{x:>9}" for x in raw) + "\n")
            f.write(f"{spk:<{width}}  sys  " + "".join(f"{x:>9}" for x in [sent, words, *pct]) + "\n")
