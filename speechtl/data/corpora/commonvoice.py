"""Mozilla Common Voice, English: crowd-sourced read speech with a self-reported accent. Licence CC0.
Download the English dataset from https://commonvoice.mozilla.org/datasets (or Mozilla Data
Collective), unpack it and point ``--src`` at the language folder::

    cv-corpus-<version>/en/validated.tsv        client_id, path, sentence, …, accents (older: accent)
    cv-corpus-<version>/en/clips/<path>.mp3     soundfile reads MP3 (libsndfile >= 1.1)
    cv-corpus-<version>/en/clip_durations.tsv   optional: clip, duration[ms] (saves opening every clip)

A hub copy (``mozilla-foundation/common_voice_<N>_0``, config ``en``) saved to disk or as parquet works
too; its splits are pooled. Only rows whose self-reported accent matches one of ``--accent`` (exact
label, case-insensitive, several labels per row split on ``|``) are kept; the official splits don't
balance accents, so validated clips are split anew by speaker (``client_id``), stratified by accent.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from speechtl.data.corpora.common import (
    Job,
    PrepareOptions,
    add_common_arguments,
    audio_duration,
    files_fingerprint,
    run_filters,
    safe_name,
)
from speechtl.data.corpora.hub import HubDataset, Row, collect, is_dataset_copy, source_identity
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import split_by_speaker
from speechtl.io import progress

LOG = logging.getLogger("speechtl.data.commonvoice")
SPEC = HubDataset(
    name="commonvoice", hub_id="mozilla-foundation/common_voice_17_0", columns=("client_id", "path", "sentence"),
    download="Download Common Voice English from https://commonvoice.mozilla.org/datasets, unpack it and point "
             "--src at the folder holding validated.tsv and clips/ (cv-corpus-<version>/en).")
REQUIRED = ("client_id", "path", "sentence")
META = ("age", "gender", "variant", "locale", "sentence_id", "up_votes", "down_votes")
SKIPPED_POOLS = ("other", "invalidated")


class AccentMatcher:
    """Which accent label, if any, a row's self-reported accents field gives; counts every label seen."""

    def __init__(self, wanted: list[str] | None) -> None:
        self.wanted = {w.strip().lower(): w.strip() for w in wanted or [] if w.strip()}
        self.seen: Counter[str] = Counter()

    def __call__(self, field: str | None) -> str | None:
        labels = [a.strip() for a in (field or "").split("|") if a.strip()]
        self.seen.update(labels)
        if not self.wanted:
            return labels[0] if labels else None
        return next((lab for lab in labels if lab.lower() in self.wanted), None)

    def nothing_matched(self, where: str) -> ManifestError:
        common = ", ".join(f"'{a}' ({n})" for a, n in self.seen.most_common(15)) or "none"
        return ManifestError(f"{where}: no clip has an accent among {sorted(self.wanted.values())}; the most common "
                             f"labels are: {common}")


def make_utterance(rec: dict, accent: str, audio: str, duration: float) -> Utterance:
    meta = {k: str(rec[k]) for k in META if rec.get(k) not in (None, "")}
    return Utterance(id=safe_name(Path(str(rec["path"])).stem), audio=audio, duration=duration,
                     text=" ".join(str(rec["sentence"] or "").split()), speaker=str(rec["client_id"]), accent=accent,
                     meta={"corpus": "commonvoice", "accents": str(rec.get("accents") or rec.get("accent") or ""),
                           **meta})


def read_durations(folder: Path) -> dict[str, float]:
    path = folder / "clip_durations.tsv"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", newline="") as f:
        return {r["clip"]: float(r["duration[ms]"]) / 1000 for r in csv.DictReader(f, delimiter="\t")}


def read_tsv(folder: Path, match: AccentMatcher) -> list[Utterance]:
    tsv = folder / "validated.tsv"
    if not tsv.is_file() or not (folder / "clips").is_dir():
        raise ManifestError(f"{folder}: expected validated.tsv and clips/ here. {SPEC.download}")
    durations = read_durations(folder)
    csv.field_size_limit(sys.maxsize)
    utts = []
    with open(tsv, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header] + ([] if {"accents", "accent"} & set(header)
                                                              else ["accents"])
        if missing:
            raise ManifestError(f"{tsv}:1: column(s) {missing} missing from the header {header}; "
                                "is this a Common Voice validated.tsv?")
        for lineno, rec in enumerate(progress(reader, desc="commonvoice", unit="row", leave=False), 2):
            accent = match(rec.get("accents") or rec.get("accent"))
            if accent is None:
                continue
            clip = folder / "clips" / rec["path"]
            if not clip.is_file():
                raise ManifestError(f"{tsv}:{lineno}: clip {clip} not found; unpack clips/ completely")
            duration = durations.get(rec["path"]) or audio_duration(clip, f"{tsv}:{lineno}")
            utts.append(make_utterance(rec, accent, str(clip.resolve()), duration))
    return utts


def make_hub_utterance(row: Row, match: AccentMatcher) -> Utterance | None:
    if row.split in SKIPPED_POOLS:
        return None
    accent = match(row.data.get("accents") or row.data.get("accent"))
    return None if accent is None else make_utterance(row.data, accent, "", 0.0)


def prepare_commonvoice(src: str, out: str | os.PathLike, accents: list[str] | None = None,
                        opts: PrepareOptions | None = None) -> dict[str, Path]:
    """Write train/dev/test manifests of the clips with the selected accents, split by speaker."""
    opts, out, folder = opts or PrepareOptions(), Path(out), Path(src).expanduser()
    local = (folder / "validated.tsv").is_file()
    if folder.is_dir() and not local and not is_dataset_copy(folder):
        raise ManifestError(f"{folder}: no validated.tsv here, nor a saved copy of a Common Voice dataset. "
                            f"{SPEC.download}")
    source = files_fingerprint(p for p in folder.glob("*.tsv")) if local else source_identity(src)
    job = Job("commonvoice", out, {"accents": sorted(accents or [])}, source, opts)
    if (done := job.done()) is not None:
        return done
    match = AccentMatcher(accents)
    if local:
        utts = read_tsv(folder, match)
    else:
        utts = [u for us in collect(SPEC, src, out, lambda row: make_hub_utterance(row, match),
                                    configs=["en"]).values() for u in us]
    if not utts:
        raise match.nothing_matched(str(src))
    LOG.info("kept %d clips with accents %s", len(utts), dict(Counter(u.accent for u in utts)))
    kept, report = run_filters({"all": utts}, opts)
    return job.finish(split_by_speaker(kept["all"], opts.fractions, opts.seed), report)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, None, "the language folder with validated.tsv and clips/ (or a saved hub copy)")
    p.add_argument("--accent", action="append", default=[], metavar="LABEL",
                   help="a self-reported accent label to keep, exactly as written (repeatable; default: every "
                        "clip that has one), e.g. --accent 'Scottish English'")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_commonvoice(args.src, args.out, args.accent or None, PrepareOptions.from_args(args))
