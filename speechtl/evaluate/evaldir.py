"""The evaluation directory: one contract for ``eval``, ``score``, ``report`` and ``compare``.

An evaluation dir holds one system's hypotheses for one test set, scored (Kaldi's ``score_kaldi_wer.sh``
in spirit, every artefact a file):

    hyp.jsonl     per utterance: raw and normalised ref/hyp, speaker, accent, error counts
    scores.json   corpus WER/CER, per speaker and accent, the speaker-bootstrap interval, provenance
    per_utt       Kaldi-style aligned ref/hyp/op lines and ``#csid`` counts per utterance
    per_spk       Kaldi-style per-speaker table
    ops           counts of each substitution, deletion and insertion
    wer           one summary line (``%WER 12.34 [ 56 / 454, 7 ins, 8 del, 41 sub ]``) and ``%CER``
    wer_bootci    the interval, as Kaldi's ``compute-wer-bootci`` prints it

:class:`EvalDir` is its only writer: ``speechtl eval`` (which decodes first) and ``speechtl score``
(another recogniser's text) write the same files, byte for byte, from the same hypotheses; only
provenance in ``scores.json`` differs (model, timing, run key). Scoring here is text only, so scoring
another system's output never imports torch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechtl.data.manifest import Utterance
from speechtl.data.text import normalizer_for
from speechtl.errors import ResultsError
from speechtl.evaluate.analysis import OpCounts, align_rows, op_counts, write_ops, write_per_spk
from speechtl.evaluate.metrics import ErrorCounts, Scores, alignment, score_rows, word_counts
from speechtl.evaluate.stats import (
    BootstrapConfig,
    bootstrap_rate,
    group_blocks,
    kaldi_bootci_single,
    resampling_blocks,
)
from speechtl.io import atomic_write, write_json, write_jsonl

# Below this many utterances, worker processes cost more than they save.
PARALLEL_MIN_UTTS = 5000
#: What every ``hyp.jsonl`` row holds, whoever wrote it (eval or score).
ROW_KEYS = ("id", "speaker", "ref_norm", "hyp_norm", "sub", "del", "ins", "ref_words")


@dataclass(frozen=True)
class EvalDir:
    """Paths of one evaluation dir, and its writer (see the module docstring)."""

    path: Path

    @property
    def hyp(self) -> Path:
        return self.path / "hyp.jsonl"

    @property
    def scores(self) -> Path:
        return self.path / "scores.json"

    @property
    def per_utt(self) -> Path:
        return self.path / "per_utt"

    @property
    def per_spk(self) -> Path:
        return self.path / "per_spk"

    @property
    def ops(self) -> Path:
        return self.path / "ops"

    @property
    def wer(self) -> Path:
        return self.path / "wer"

    @property
    def bootci(self) -> Path:
        return self.path / "wer_bootci"

    @property
    def partial(self) -> Path:
        """Hypotheses appended batch by batch while decoding, so a killed ``eval`` resumes there."""
        return self.path / ".hyp.partial.jsonl"

    @property
    def partial_key(self) -> Path:
        return self.path / ".hyp.partial.key"

    def is_scored(self) -> bool:
        return self.scores.is_file()

    def read_scores(self) -> dict[str, Any]:
        return json.loads(self.scores.read_text(encoding="utf-8"))

    def read_rows(self) -> list[dict]:
        """``hyp.jsonl``'s rows, checked (:func:`read_rows`)."""
        return read_rows(self.hyp)

    def write(self, scored: Scored, meta: dict, cfg: BootstrapConfig | None = None) -> dict:
        """Every artefact, from scored rows; returns what went into scores.json (``meta`` first)."""
        cfg = cfg or BootstrapConfig()
        rows, scores = scored.rows, scored.scores
        self.path.mkdir(parents=True, exist_ok=True)
        # Seeds derived from the set's dir name, as report and compare derive them: the same evaluation gets the
        # same interval from every command.
        blocks = resampling_blocks(rows)
        wer_ci = bootstrap_rate(blocks, cfg.derive(self.path.name, "wer"))
        cer_ci = bootstrap_rate(group_blocks(scores.to_dict()["per_speaker"], "cer"), cfg.derive(self.path.name, "cer"))
        result = {**meta, "utterances": len(rows), "audio_seconds": round(sum(r["duration"] for r in rows), 2),
                  **scores.to_dict(),
                  "bootstrap": {"block_unit": blocks.unit, "speakers": len(scores.groups.get("speaker", {})),
                                **cfg.to_dict(), "wer": wer_ci.to_dict(), "cer": cer_ci.to_dict()}}
        write_jsonl(self.hyp, rows)
        with atomic_write(self.per_utt) as f:
            f.write(scored.per_utt)
        write_per_spk(rows, self.per_spk)
        write_ops(scored.ops, self.ops)
        w = scores.wer
        with atomic_write(self.wer) as f:
            f.write(f"%WER {100 * w.rate:.2f} [ {w.errors} / {w.ref}, {w.ins} ins, {w.dele} del, {w.sub} sub ]\n"
                    f"%CER {100 * scores.cer.rate:.2f}\n")
        with atomic_write(self.bootci) as f:
            f.write(kaldi_bootci_single(wer_ci, cfg, result["bootstrap"]["speakers"], "WER"))
            f.write(kaldi_bootci_single(cer_ci, cfg, result["bootstrap"]["speakers"], "CER"))
        write_json(self.scores, result)
        return result


def read_rows(path: Path) -> list[dict]:
    """``hyp.jsonl`` rows; a broken line is an error naming the file and line."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}:{lineno}: not valid JSON ({e.msg}); re-run the evaluation of this "
                               "set") from None
        absent = [k for k in ROW_KEYS if k not in row]
        if absent:
            raise ResultsError(f"{path}:{lineno}: row lacks {absent}; it was not written by speechtl eval/score")
        rows.append(row)
    return rows


def score_hypotheses(utts: Sequence[Utterance], hyps: dict[str, str], normalizer: str = "whisper"
                     ) -> tuple[list[dict], Scores]:
    """Per-utterance rows (raw and normalised text, counts) and their scores."""
    rows = []
    for u in utts:
        norm = normalizer_for(u.lang, normalizer)
        ref_n, hyp_n = norm(u.text), norm(hyps[u.id])
        c = word_counts(ref_n, hyp_n)
        rows.append({"id": u.id, "speaker": u.speaker, "accent": u.accent, "lang": u.lang, "duration": u.duration,
                     "ref": u.text, "hyp": hyps[u.id], "ref_norm": ref_n, "hyp_norm": hyp_n,
                     "sub": c.sub, "del": c.dele, "ins": c.ins, "ref_words": c.ref})
    return rows, score_rows(rows)


def per_utt_text(rows: Sequence[dict]) -> str:
    """Kaldi's ``per_utt``: aligned ref, hyp and op lines, then ``#csid`` counts, per utterance."""
    lines = []
    for r in rows:
        al = alignment(r["ref_norm"], r["hyp_norm"])
        cells = [(op, a or "***", b or "***") for op, a, b in al]
        width = [max(len(a), len(b)) for _, a, b in cells]
        for label, col in (("ref  ", 1), ("hyp  ", 2), ("op   ", 0)):
            lines.append(f"{r['id']} {label}" + " ".join(c[col].ljust(n) for c, n in zip(cells, width, strict=True)))
        ops = [op for op, _, _ in al]
        lines.append(f"{r['id']} #csid {ops.count('C')} {ops.count('S')} {ops.count('I')} {ops.count('D')}")
    return "".join(line + "\n" for line in lines)


def write_per_utt(rows: Sequence[dict], path: Path) -> None:
    with atomic_write(path) as f:
        f.write(per_utt_text(rows))


def _merge_scores(parts: Sequence[Scores]) -> Scores:
    total = Scores(ErrorCounts(), ErrorCounts(), {})
    for p in parts:
        total.wer, total.cer = total.wer + p.wer, total.cer + p.cer
        for g, table in p.groups.items():
            mine = total.groups.setdefault(g, {})
            for k, v in table.items():
                prev = mine.get(k, {"wer": ErrorCounts(), "cer": ErrorCounts()})
                mine[k] = {"wer": prev["wer"] + v["wer"], "cer": prev["cer"] + v["cer"]}
    return total


@dataclass
class Scored:
    """What scoring produces before anything is written: rows, scores, Kaldi ``per_utt`` text and op counts."""

    rows: list[dict]
    scores: Scores
    per_utt: str
    ops: OpCounts


def _score_chunk(args: tuple[list[Utterance], dict[str, str], str]) -> Scored:
    """Everything per-utterance for one chunk: normalise, count, align (per_utt and ops)."""
    rows, scores = score_hypotheses(*args)
    return Scored(rows, scores, per_utt_text(rows), op_counts(align_rows(rows).values()))


def score_parallel(utts: Sequence[Utterance], hyps: dict[str, str], normalizer: str = "whisper", jobs: int = 1
                   ) -> Scored:
    """``score_hypotheses`` (plus the alignments behind per_utt and ops) over contiguous chunks in ``jobs``
    processes (0: one per CPU core); the result is identical to one chunk in this process.

    Normalisation, alignment and counting cost ~0.5 ms an utterance, independently per utterance, so
    a large set divides over cores; below ``PARALLEL_MIN_UTTS`` it runs in this process.
    """
    jobs = jobs if jobs > 0 else (os.cpu_count() or 1)
    if jobs <= 1 or len(utts) < PARALLEL_MIN_UTTS:
        return _score_chunk((list(utts), hyps, normalizer))
    n_chunks = jobs * 4
    size = -(-len(utts) // n_chunks)
    chunks = [list(utts[i:i + size]) for i in range(0, len(utts), size)]
    work = [(c, {u.id: hyps[u.id] for u in c}, normalizer) for c in chunks]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        parts = list(pool.map(_score_chunk, work))
    ops = OpCounts()
    for p in parts:
        ops = ops + p.ops
    return Scored([r for p in parts for r in p.rows], _merge_scores([p.scores for p in parts]),
                  "".join(p.per_utt for p in parts), ops)
