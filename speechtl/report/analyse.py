"""Everything the report says about one test set: paired statistics, breakdowns and error analysis.

The report only formats what is computed here, and ``results.json`` stores the same objects, so
the human and the machine views can't disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from speechtl.errors import ResultsError
from speechtl.evaluate.analysis import (
    Alignment,
    OpCounts,
    WordChanges,
    align_rows,
    aligned_lines,
    op_counts,
    row_errors,
    word_changes,
    worst_rows,
)
from speechtl.evaluate.stats import (
    BlockCounts,
    BootstrapConfig,
    PairedResult,
    group_blocks,
    paired_bootstrap,
    resampling_blocks,
    word_blocks,
)
from speechtl.report.loading import EvalSet


@dataclass
class WorstUtterance:
    """One of the utterances that still go worst after adaptation, aligned to its reference both ways."""

    id: str
    speaker: str
    ref_words: int
    errors_before: int
    errors_after: int
    before: tuple[str, str, str]  # ref, hyp, op lines
    after: tuple[str, str, str]

    def to_dict(self) -> dict:
        return {"id": self.id, "speaker": self.speaker, "ref_words": self.ref_words,
                "errors_before": self.errors_before, "errors_after": self.errors_after,
                "before": dict(zip(("ref", "hyp", "op"), self.before, strict=True)),
                "after": dict(zip(("ref", "hyp", "op"), self.after, strict=True))}


@dataclass
class SetAnalysis:
    """Paired before/after statistics of one test set (all WER intervals by speaker blocks)."""

    wer: PairedResult
    cer: PairedResult | None
    per_accent: dict[str, PairedResult]
    per_speaker: dict[str, PairedResult]  # blocks are that speaker's utterances
    speaker_accent: dict[str, str]
    ops_before: OpCounts
    ops_after: OpCounts
    changes: WordChanges
    worst: list[WorstUtterance] = field(default_factory=list)
    improved: list[dict] = field(default_factory=list)
    blocks_before: BlockCounts | None = None  # word errors per speaker, for the forgetting score
    blocks_after: BlockCounts | None = None

    def to_dict(self, top: int) -> dict:
        return {"wer": self.wer.to_dict(), "cer": self.cer.to_dict() if self.cer else None,
                "per_accent": {k: v.to_dict() for k, v in sorted(self.per_accent.items())},
                "per_speaker": {k: {"accent": self.speaker_accent.get(k), **v.to_dict()}
                                for k, v in sorted(self.per_speaker.items())},
                "errors": {"before": self.ops_before.to_dict(top), "after": self.ops_after.to_dict(top),
                           **self.changes.to_dict(top)},
                "worst_after": [w.to_dict() for w in self.worst], "most_improved": self.improved}


def _by(rows: list[dict], key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        out[str(r.get(key, ""))].append(r)
    return dict(out)


def _worst(before: dict[str, dict], after_rows: list[dict], al_b: dict[str, Alignment], al_a: dict[str, Alignment],
           n: int) -> list[WorstUtterance]:
    return [WorstUtterance(r["id"], str(r["speaker"]), r["ref_words"], row_errors(before[r["id"]]), row_errors(r),
                           aligned_lines(al_b[r["id"]]), aligned_lines(al_a[r["id"]]))
            for r in worst_rows(after_rows, n)]


def _improved(before: dict[str, dict], after_rows: list[dict], n: int) -> list[dict]:
    """The utterances whose error count fell most, raw text before and after (as people read it)."""
    gains = sorted((row_errors(r) - row_errors(before[r["id"]]), r["id"]) for r in after_rows)
    after = {r["id"]: r for r in after_rows}
    return [{"id": i, "ref": before[i].get("ref", before[i]["ref_norm"]),
             "before": before[i].get("hyp", before[i]["hyp_norm"]), "after": after[i].get("hyp", after[i]["hyp_norm"]),
             "errors_before": row_errors(before[i]), "errors_after": row_errors(after[i])}
            for d, i in gains[:n] if d < 0]


def analyse_set(name: str, before: EvalSet, after: EvalSet, cfg: BootstrapConfig, n_worst: int = 5,
                n_examples: int = 3) -> SetAnalysis:
    """All statistics of one test set; ``before`` and ``after`` must hold the same utterances (checked by
    the caller with :func:`speechtl.report.loading.check_same_utterances`)."""
    if before.rows is None or after.rows is None:
        missing = before.path if before.rows is None else after.path
        raise ResultsError(f"{missing / 'hyp.jsonl'} not found: the per-utterance rows are needed for statistics")
    rb, ra = before.rows, after.rows
    blocks_b, blocks_a = resampling_blocks(rb), resampling_blocks(ra)
    wer = paired_bootstrap(blocks_b, blocks_a, cfg.derive(name, "wer"), f"test set {name}")
    cer = None
    if "per_speaker" in before.scores and "per_speaker" in after.scores:
        cer = paired_bootstrap(group_blocks(before.scores["per_speaker"], "cer"),
                               group_blocks(after.scores["per_speaker"], "cer"), cfg.derive(name, "cer"),
                               f"test set {name} (CER)")
    acc_b, acc_a = _by(rb, "accent"), _by(ra, "accent")
    per_accent = {a: paired_bootstrap(resampling_blocks(acc_b[a]), resampling_blocks(acc_a.get(a, [])),
                                      cfg.derive(name, "accent", a), f"test set {name}, accent {a}")
                  for a in sorted(acc_b)}
    spk_b, spk_a = _by(rb, "speaker"), _by(ra, "speaker")
    per_speaker = {s: paired_bootstrap(word_blocks(spk_b[s], None), word_blocks(spk_a.get(s, []), None),
                                       cfg.derive(name, "speaker", s), f"test set {name}, speaker {s}")
                   for s in sorted(spk_b)}
    al_b, al_a = align_rows(rb), align_rows(ra)
    by_id = {r["id"]: r for r in rb}
    return SetAnalysis(wer, cer, per_accent, per_speaker, {str(r["speaker"]): str(r.get("accent", "")) for r in rb},
                       op_counts(al_b.values()), op_counts(al_a.values()), word_changes(al_b, al_a),
                       _worst(by_id, ra, al_b, al_a, n_worst), _improved(by_id, ra, n_examples), blocks_b, blocks_a)
