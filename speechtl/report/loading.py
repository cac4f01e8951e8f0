"""Read evaluation directories back (``scores.json`` and ``hyp.jsonl``) and check that they are comparable.

Two systems can only be compared on the same utterances with the same (normalised) references;
anything else is a different test, so it is an error that names the utterance and both files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechtl.errors import ResultsError
from speechtl.evaluate.evaldir import EvalDir

IDS_SHOWN = 10


@dataclass
class EvalSet:
    """One system's evaluation of one test set, as ``speechtl eval`` or ``speechtl score`` wrote it."""

    path: Path
    scores: dict[str, Any]
    rows: list[dict] | None  # None when the directory has no hyp.jsonl (old or partial runs)

    @property
    def speakers(self) -> int:
        return len(self.scores.get("per_speaker", {}))

    @property
    def utterances(self) -> int:
        return self.scores.get("utterances", len(self.rows or []))


def load_eval_set(d: Path) -> EvalSet | None:
    """The evaluation in ``d``, or None when ``d`` has no ``scores.json``."""
    ev = EvalDir(d)
    f = ev.scores
    if not f.is_file():
        return None
    try:
        scores = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ResultsError(f"{f}:{e.lineno}: not valid JSON ({e.msg}); re-run the evaluation of this set") from None
    return EvalSet(d, scores, ev.read_rows() if ev.hyp.is_file() else None)


def _listed(ids: list[str]) -> str:
    shown = ", ".join(f"'{i}'" for i in ids[:IDS_SHOWN])
    return shown + (f" and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else "")


def check_same_utterances(sets: Mapping[str, EvalSet], test_set: str) -> None:
    """Every system must have scored the same utterance ids against the same normalised references."""
    have = {label: s for label, s in sets.items() if s.rows is not None}
    if len(have) < 2:
        return
    (first_label, first), *others = have.items()
    ref_of = {r["id"]: r["ref_norm"] for r in first.rows}
    for label, s in others:
        ids = {r["id"]: r["ref_norm"] for r in s.rows}
        missing = sorted(set(ref_of) - set(ids))
        extra = sorted(set(ids) - set(ref_of))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"utterance(s) {_listed(missing)} of {first.path / 'hyp.jsonl'} are missing from "
                             f"{s.path / 'hyp.jsonl'}")
            if extra:
                parts.append(f"utterance(s) {_listed(extra)} of {s.path / 'hyp.jsonl'} are not in "
                             f"{first.path / 'hyp.jsonl'}")
            raise ResultsError(f"test set {test_set}: {first_label} and {label} were not scored on the same "
                               f"utterances: {'; '.join(parts)}. Evaluate both on the same manifest.")
        differ = sorted(i for i in ids if ids[i] != ref_of[i])
        if differ:
            i = differ[0]
            raise ResultsError(f"test set {test_set}: utterance '{i}' has a different reference in "
                               f"{first.path / 'hyp.jsonl'} ({ref_of[i]!r}) than in {s.path / 'hyp.jsonl'} "
                               f"({ids[i]!r}); {len(differ)} utterance(s) differ. Score both with the same manifest "
                               "and normaliser.")
