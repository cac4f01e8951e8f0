"""Score hypotheses made by any recogniser against a manifest, exactly as ``speechtl eval`` scores its own.

Benchmarking another system (Kaldi, ESPnet, a cloud API) is only fair when its output goes through
the same normaliser, the same alignment and the same statistics; this module takes its text and
writes the same evaluation directory ``eval`` writes (``hyp.jsonl``, ``scores.json``, ``per_utt``,
``wer``), plus ``per_spk``, ``ops`` and ``wer_bootci`` (speaker-bootstrap interval).

Hypothesis files:
- JSON Lines, one object per utterance: ``{"id": ..., "hyp": ...}`` (or ``"text"`` instead of ``"hyp"``);
- Kaldi ``text``: ``utt-id word word ...`` (an id alone means an empty hypothesis).

Every reference id needs exactly one hypothesis and vice versa; otherwise the error names the ids
and the files (``missing="empty"`` scores absent hypotheses as empty, i.e. all deletions).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from speechtl.data.manifest import Utterance, read_manifest
from speechtl.errors import SpeechtlError, UsageError
from speechtl.evaluate.analysis import OpCounts, align_rows, op_counts, write_ops, write_per_spk
from speechtl.evaluate.metrics import ErrorCounts, Scores
from speechtl.evaluate.stats import (
    BootstrapConfig,
    bootstrap_rate,
    group_blocks,
    kaldi_bootci_single,
    resampling_blocks,
)
from speechtl.io import atomic_write, text_lines, write_json, write_jsonl

LOG = logging.getLogger("speechtl.evaluate")
IDS_SHOWN = 10
# Below this many utterances, worker processes cost more than they save.
PARALLEL_MIN_UTTS = 5000


class HypothesisError(SpeechtlError):
    """A hypothesis file that can't be scored; the message names the file, the line and the id."""


def read_hypotheses(path: str | os.PathLike) -> dict[str, str]:
    """Hypotheses by utterance id from a JSON Lines or a Kaldi ``text`` file (decided by the first line)."""
    path = Path(path)
    if not path.is_file():
        raise HypothesisError(f"{path}: hypothesis file not found")
    lines = []
    for lineno, raw in enumerate(text_lines(path), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise HypothesisError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start}); re-encode "
                                  "the file as UTF-8") from None
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise HypothesisError(f"{path}: hypothesis file is empty")
    parse = _parse_json_line if first.lstrip().startswith("{") else _parse_kaldi_line
    hyps: dict[str, str] = {}
    where_of: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        uid, text = parse(line, f"{path}:{lineno}")
        if uid in hyps:
            raise HypothesisError(f"{path}:{lineno}: duplicate utterance id '{uid}' (first on line {where_of[uid]}); "
                                  "keep one hypothesis per utterance")
        hyps[uid], where_of[uid] = text, lineno
    return hyps


def _parse_json_line(line: str, where: str) -> tuple[str, str]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise HypothesisError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); mixed JSON and Kaldi "
                              "text lines? use one format per file") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise HypothesisError(f"{where}: expected an object with a string 'id', got {line[:60]!r}")
    text = obj.get("hyp", obj.get("text"))
    if not isinstance(text, str):
        raise HypothesisError(f"{where}: utterance '{obj['id']}' has no string 'hyp' (or 'text') field")
    return obj["id"], text


def _parse_kaldi_line(line: str, where: str) -> tuple[str, str]:
    parts = line.strip().split(maxsplit=1)
    if parts[0].startswith("{"):
        raise HypothesisError(f"{where}: a JSON line in a Kaldi text file; use one format per file")
    return parts[0], parts[1] if len(parts) > 1 else ""


def _listed(ids: Sequence[str]) -> str:
    shown = ", ".join(f"'{i}'" for i in ids[:IDS_SHOWN])
    return shown + (f" and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else "")


def match_ids(utts: Sequence[Utterance], hyps: dict[str, str], ref_path: Path, hyp_path: Path,
              missing: str = "error") -> dict[str, str]:
    """Check that references and hypotheses cover the same utterances; name the ones that don't."""
    if missing not in ("error", "empty"):
        raise UsageError(f"missing must be 'error' or 'empty', got '{missing}'")
    ref_ids = {u.id for u in utts}
    extra = sorted(set(hyps) - ref_ids)
    if extra:
        raise HypothesisError(f"{hyp_path}: {len(extra)} hypothesis id(s) not in the reference manifest {ref_path}: "
                              f"{_listed(extra)}; were they made from a different manifest?")
    absent = [u.id for u in utts if u.id not in hyps]
    if absent and missing == "error":
        raise HypothesisError(f"{hyp_path}: no hypothesis for {len(absent)} utterance(s) of {ref_path}: "
                              f"{_listed(absent)}; add them (an empty hypothesis is fine) or pass --missing empty")
    if absent:
        LOG.warning("%s: %d utterance(s) have no hypothesis and are scored as empty: %s", hyp_path, len(absent),
                    _listed(absent))
    return {u.id: hyps.get(u.id, "") for u in utts}


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
    from speechtl.evaluate.decode import score_hypotheses, write_per_utt

    rows, scores = score_hypotheses(*args)
    with tempfile.TemporaryDirectory() as tmp:  # eval's own per_utt writer, so the format is eval's
        write_per_utt(rows, Path(tmp) / "per_utt")
        per_utt = (Path(tmp) / "per_utt").read_text(encoding="utf-8")
    return Scored(rows, scores, per_utt, op_counts(align_rows(rows).values()))


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


def write_scored_dir(out_dir: Path, scored: Scored, meta: dict, cfg: BootstrapConfig) -> dict:
    """Every artefact of an evaluation directory, from scored rows; returns what went into scores.json."""
    rows, scores = scored.rows, scored.scores
    out_dir.mkdir(parents=True, exist_ok=True)
    # Seeds derived from the set's dir name, as report and compare derive them: the same evaluation gets the
    # same interval from every command.
    blocks = resampling_blocks(rows)
    wer_ci = bootstrap_rate(blocks, cfg.derive(out_dir.name, "wer"))
    cer_ci = bootstrap_rate(group_blocks(scores.to_dict()["per_speaker"], "cer"), cfg.derive(out_dir.name, "cer"))
    result = {**meta, "utterances": len(rows), "audio_seconds": round(sum(r["duration"] for r in rows), 2),
              **scores.to_dict(),
              "bootstrap": {"block_unit": blocks.unit, "speakers": len(scores.groups.get("speaker", {})),
                            **cfg.to_dict(), "wer": wer_ci.to_dict(), "cer": cer_ci.to_dict()}}
    write_jsonl(out_dir / "hyp.jsonl", rows)
    with atomic_write(out_dir / "per_utt") as f:
        f.write(scored.per_utt)
    write_per_spk(rows, out_dir / "per_spk")
    write_ops(scored.ops, out_dir / "ops")
    w = scores.wer
    with atomic_write(out_dir / "wer") as f:
        f.write(f"%WER {100 * w.rate:.2f} [ {w.errors} / {w.ref}, {w.ins} ins, {w.dele} del, {w.sub} sub ]\n"
                f"%CER {100 * scores.cer.rate:.2f}\n")
    with atomic_write(out_dir / "wer_bootci") as f:
        f.write(kaldi_bootci_single(wer_ci, cfg, result["bootstrap"]["speakers"], "WER"))
        f.write(kaldi_bootci_single(cer_ci, cfg, result["bootstrap"]["speakers"], "CER"))
    write_json(out_dir / "scores.json", result)
    return result


def score_external(ref: Path, hyp: Path, out_dir: Path, normalizer: str = "whisper",
                   cfg: BootstrapConfig | None = None, missing: str = "error", jobs: int = 1,
                   label: str | None = None) -> dict:
    """Read, match, normalise, score and write; the whole ``speechtl score`` command."""
    cfg = cfg or BootstrapConfig()
    t0 = time.perf_counter()
    utts = read_manifest(ref, check_audio=False)
    hyps = match_ids(utts, read_hypotheses(hyp), ref, hyp, missing)
    scored = score_parallel(utts, hyps, normalizer, jobs)
    meta = {"model": label or str(hyp), "manifest": str(ref), "hypotheses": str(hyp),
            "options": {"normalizer": normalizer, "missing": missing}}
    result = write_scored_dir(out_dir, scored, meta, cfg)
    LOG.info("%s: WER %.2f%% CER %.2f%% on %d utterances (%.1fs)", out_dir, 100 * scored.scores.wer.rate,
             100 * scored.scores.cer.rate, len(scored.rows), time.perf_counter() - t0)
    return result
