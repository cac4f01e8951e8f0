"""Score hypotheses made by any recogniser against a manifest, exactly as ``speechtl eval`` scores its own.

Benchmarking another system (Kaldi, ESPnet, a cloud API) is only fair when its output goes through
the same normaliser, the same alignment and the same statistics; this module takes its text and
writes the same evaluation directory ``eval`` writes (:class:`~speechtl.evaluate.evaldir.EvalDir`).

Hypothesis files:
- JSON Lines, one object per utterance: ``{"id": ..., "hyp": ...}`` (or ``"text"`` instead of ``"hyp"``);
- Kaldi ``text``: ``utt-id word word ...`` (an id alone means an empty hypothesis).

Every reference id needs exactly one hypothesis and vice versa; otherwise the error names the ids
and the files (``missing="empty"`` scores absent hypotheses as empty, i.e. all deletions).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from speechtl.data.manifest import Utterance, read_manifest
from speechtl.data.text import normalizer_version
from speechtl.errors import SpeechtlError, UsageError
from speechtl.evaluate.evaldir import EvalDir, score_parallel
from speechtl.evaluate.stats import BootstrapConfig
from speechtl.io import text_lines

LOG = logging.getLogger("speechtl.evaluate")
IDS_SHOWN = 10


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
            "options": {"normalizer": normalizer, "missing": missing},
            "normalizer_version": normalizer_version(normalizer)}
    result = EvalDir(out_dir).write(scored, meta, cfg)
    LOG.info("%s: WER %.2f%% CER %.2f%% on %d utterances (%.1fs)", out_dir, 100 * scored.scores.wer.rate,
             100 * scored.scores.cer.rate, len(scored.rows), time.perf_counter() - t0)
    return result
