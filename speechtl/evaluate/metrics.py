"""WER and CER with their edit operations, at corpus level and per group (speaker, accent).

Counts come from jiwer's alignments and are summed before dividing, so a corpus WER is
``(S + D + I) / N`` over all words, not a mean of per-utterance rates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import jiwer
from rapidfuzz.distance import Levenshtein


@dataclass
class ErrorCounts:
    """Edit operations of hypotheses against references; ``ref`` is the number of reference units."""

    sub: int = 0
    dele: int = 0
    ins: int = 0
    hits: int = 0
    utts: int = 0

    @property
    def ref(self) -> int:
        return self.sub + self.dele + self.hits

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """Error rate; an empty reference with insertions counts as 100% per inserted unit."""
        return self.errors / self.ref if self.ref else float(self.ins > 0)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(self.sub + other.sub, self.dele + other.dele, self.ins + other.ins,
                           self.hits + other.hits, self.utts + other.utts)

    def to_dict(self) -> dict:
        return {**asdict(self), "ref": self.ref, "errors": self.errors, "rate": self.rate}


def word_counts(ref: str, hyp: str) -> ErrorCounts:
    """Word-level counts for one normalised pair (empty strings allowed)."""
    return _counts(ref.split(), hyp.split())


def char_counts(ref: str, hyp: str) -> ErrorCounts:
    """Character-level counts; spaces are units too, as in jiwer's CER."""
    return _counts(list(ref), list(hyp))


def _counts(ref: Sequence[str], hyp: Sequence[str]) -> ErrorCounts:
    # rapidfuzz's edit operations are what jiwer aligns with too; called directly they cost a tenth as much
    # (no jiwer transform pipeline per utterance), which matters when scoring 100,000 utterances.
    if not ref:
        return ErrorCounts(ins=len(hyp), utts=1)
    if not hyp:
        return ErrorCounts(dele=len(ref), utts=1)
    sub = dele = ins = 0
    for op in Levenshtein.editops(ref, hyp):
        if op.tag == "replace":
            sub += 1
        elif op.tag == "delete":
            dele += 1
        else:
            ins += 1
    return ErrorCounts(sub, dele, ins, len(ref) - sub - dele, 1)


def alignment(ref: str, hyp: str) -> list[tuple[str, str | None, str | None]]:
    """Word alignment as (op, ref word, hyp word), op in {'C', 'S', 'D', 'I'}, for error analysis."""
    r, h = ref.split(), hyp.split()
    if not r or not h:
        return [("D", w, None) for w in r] + [("I", None, w) for w in h]
    out = jiwer.process_words(ref, hyp)
    rows: list[tuple[str, str | None, str | None]] = []
    for chunk in out.alignments[0]:
        if chunk.type == "equal" or chunk.type == "substitute":
            op = "C" if chunk.type == "equal" else "S"
            rows.extend((op, r[i], h[j]) for i, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx),
                                                          range(chunk.hyp_start_idx, chunk.hyp_end_idx), strict=True))
        elif chunk.type == "delete":
            rows.extend(("D", r[i], None) for i in range(chunk.ref_start_idx, chunk.ref_end_idx))
        else:
            rows.extend(("I", None, h[j]) for j in range(chunk.hyp_start_idx, chunk.hyp_end_idx))
    return rows


@dataclass
class Scores:
    """Corpus-level and per-group WER/CER of one system on one test set."""

    wer: ErrorCounts
    cer: ErrorCounts
    groups: dict[str, dict[str, dict[str, ErrorCounts]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"wer": self.wer.to_dict(), "cer": self.cer.to_dict(),
                **{f"per_{g}": {k: {"wer": v["wer"].to_dict(), "cer": v["cer"].to_dict()} for k, v in sorted(d.items())}
                   for g, d in self.groups.items()}}


def row_word_counts(row: dict) -> ErrorCounts:
    """Word counts of a scored row: the ones it carries (``sub``/``del``/``ins``/``ref_words``) or fresh ones."""
    if "ref_words" in row:
        hits = row["ref_words"] - row["sub"] - row["del"]
        return ErrorCounts(row["sub"], row["del"], row["ins"], hits, 1)
    return word_counts(row["ref_norm"], row["hyp_norm"])


def score_rows(rows: Iterable[dict], group_by: Sequence[str] = ("speaker", "accent")) -> Scores:
    """Score rows carrying ``ref_norm``, ``hyp_norm`` and the ``group_by`` keys (word counts reused if present)."""
    total_w, total_c = ErrorCounts(), ErrorCounts()
    groups: dict[str, dict[str, dict[str, ErrorCounts]]] = {
        g: defaultdict(lambda: {"wer": ErrorCounts(), "cer": ErrorCounts()}) for g in group_by}
    for row in rows:
        w = row_word_counts(row)
        c = char_counts(row["ref_norm"], row["hyp_norm"])
        total_w, total_c = total_w + w, total_c + c
        for g in group_by:
            bucket = groups[g][str(row.get(g, ""))]
            bucket["wer"] = bucket["wer"] + w
            bucket["cer"] = bucket["cer"] + c
    return Scores(total_w, total_c, {g: dict(d) for g, d in groups.items()})
