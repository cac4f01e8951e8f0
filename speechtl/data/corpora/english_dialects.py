"""English dialects of the British Isles (OpenSLR 83, Demirsahin et al. 2020): read sentences by
volunteers of six dialect regions. Licence CC BY-SA 4.0. Hub: ``ylacombe/english_dialects``, one
config per dialect and gender (``scottish_female``, ``irish_male``, …; there is no irish_female), a
single ``train`` split each, columns ``line_id``, ``audio``, ``text``, ``speaker_id``.

A local copy keeps the hub's config folders (``scottish_male/train-00000-of-00001-….parquet``, or a
``save_to_disk`` folder per config named after it), since the folder is what tells the dialect.
Speakers are split train/dev/test within each dialect. Speakers read from one pool of lines, so the
lines (``line_id``) are dealt out to the sets as well, and a test speaker keeps only lines no training
speaker read (``--shared-text`` keeps every recording instead).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from speechtl.data.corpora.common import Job, PrepareOptions, add_common_arguments, run_filters, safe_name, split_list
from speechtl.data.corpora.hub import HubDataset, Row, collect, is_hub_id, source_identity
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import make_text_disjoint, split_by_speaker

CONFIGS = ("irish_male", "midlands_female", "midlands_male", "northern_female", "northern_male",
           "scottish_female", "scottish_male", "southern_female", "southern_male", "welsh_female", "welsh_male")
DIALECTS = sorted({c.split("_")[0] for c in CONFIGS})
SPEC = HubDataset(
    name="english_dialects", hub_id="ylacombe/english_dialects", columns=("line_id", "audio", "text", "speaker_id"),
    download="Without internet: on a machine with it run `huggingface-cli download --repo-type dataset "
             "ylacombe/english_dialects --local-dir english_dialects` (add --include 'scottish_*/*' for one "
             "dialect), copy the folder here and point --src at it.")


def resolve_dialects(dialects: list[str] | None) -> list[str]:
    names = [d.lower() for d in dialects] if dialects else DIALECTS
    unknown = [d for d in names if d not in DIALECTS]
    if unknown:
        raise ManifestError(f"--dialects: unknown dialect(s) {unknown}; known: {', '.join(DIALECTS)}")
    return names


def make_utterance(row: Row, dialects: list[str]) -> Utterance | None:
    dialect, _, gender = row.config.partition("_")
    if row.config not in CONFIGS:
        raise ManifestError(f"{row.where}: config '{row.config}' is not one of {', '.join(CONFIGS)}; keep the "
                            "hub's config folders (e.g. scottish_male/…) in the local copy, they tell the dialect")
    if dialect not in dialects:
        return None
    r = row.data
    speaker = f"{row.config}_{r['speaker_id']}"
    return Utterance(id=safe_name(f"{speaker}_{r['line_id']}"), audio="", duration=0.0,
                     text=" ".join(str(r["text"] or "").split()), speaker=speaker, accent=dialect,
                     meta={"corpus": "english_dialects", "gender": gender, "line_id": str(r["line_id"])})


def prepare_english_dialects(src: str, out: str | os.PathLike, dialects: list[str] | None = None,
                             opts: PrepareOptions | None = None, shared_text: bool = False) -> dict[str, Path]:
    """Write train/dev/test manifests of the selected dialects, speaker-disjoint within each dialect."""
    opts, out, names = opts or PrepareOptions(), Path(out), resolve_dialects(dialects)
    job = Job("english_dialects", out, {"dialects": names, "shared_text": shared_text}, source_identity(src), opts)
    if (done := job.done()) is not None:
        return done
    configs = [c for c in CONFIGS if c.split("_")[0] in names] if is_hub_id(src) else None
    found = collect(SPEC, src, out, lambda row: make_utterance(row, names), configs=configs)
    utts = [u for us in found.values() for u in us]
    missing = sorted(set(names) - {u.accent for u in utts})
    if missing and (dialects or not utts):
        raise ManifestError(f"{src}: no rows for dialect(s) {missing}; the copy lacks their config folders "
                            f"({', '.join(c for c in CONFIGS if c.split('_')[0] in missing)}). {SPEC.download}")
    kept, report = run_filters({"all": utts}, opts)
    sets = split_by_speaker(kept["all"], opts.fractions, opts.seed)
    dropped = {} if shared_text else make_text_disjoint(sets, lambda u: u.meta["line_id"], opts.fractions, opts.seed)
    return job.finish(sets, report, notes={"lines": "shared across sets" if shared_text else "disjoint across sets",
                                           "dropped_for_line_overlap": dropped})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, SPEC.hub_id, "hub id, or a local copy with the hub's config folders")
    p.add_argument("--dialects", default=None, help=f"comma-separated, from {', '.join(DIALECTS)} (default: all)")
    p.add_argument("--shared-text", action="store_true",
                   help="keep every recording, though train and test speakers then read the same lines")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_english_dialects(args.src, args.out, split_list(args.dialects), PrepareOptions.from_args(args),
                                    args.shared_text)
