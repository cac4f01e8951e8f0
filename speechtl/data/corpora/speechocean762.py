"""speechocean762: 5,000 English sentences read by 250 Mandarin-L1 speakers (half of them children),
scored for pronunciation by five experts. Licence Apache 2.0 (free for commercial use). Hub:
``mispeech/speechocean762`` (parquet), splits ``train`` and ``test`` (125 different speakers each),
columns ``text``, ``speaker``, ``gender``, ``age``, ``audio`` and the sentence scores ``accuracy``,
``completeness``, ``fluency``, ``prosodic``, ``total`` (kept as metadata; word-level ``words`` is not).

The official test split is kept; ``train`` and ``dev`` are carved from the official train split by
speaker (``--fractions``' TEST share is ignored). ``--test-only`` reads and writes the test split only.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from speechtl.data.corpora.common import Job, PrepareOptions, add_common_arguments, run_filters, safe_name
from speechtl.data.corpora.hub import HubDataset, Row, collect, source_identity
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import split_by_speaker

SPEC = HubDataset(
    name="speechocean762", hub_id="mispeech/speechocean762", columns=("text", "speaker", "audio"),
    download="Without internet: on a machine with it run `huggingface-cli download --repo-type dataset "
             "mispeech/speechocean762 --local-dir speechocean762`, copy the folder here and point --src at it.")
META = ("gender", "age", "accuracy", "completeness", "fluency", "prosodic", "total")


def make_utterance(row: Row) -> Utterance:
    r = row.data
    if row.split not in ("train", "test"):
        raise ManifestError(f"{row.where}: unknown split '{row.split}'; speechocean762 has train and test")
    audio = r.get("audio")
    name = Path(str(audio.get("path") or "")).stem if isinstance(audio, dict) else ""
    speaker = str(r["speaker"])
    return Utterance(id=safe_name(f"so762-{speaker}-{name or row.where.rsplit(' ', 1)[-1]}"), audio="",
                     duration=0.0, text=" ".join(str(r["text"] or "").split()), speaker=speaker, accent="mandarin",
                     meta={"corpus": "speechocean762", **{k: r[k] for k in META if r.get(k) is not None}})


def prepare_speechocean762(src: str, out: str | os.PathLike, test_only: bool = False,
                           opts: PrepareOptions | None = None) -> dict[str, Path]:
    """Write train/dev (carved from the official train split) and test manifests, or test only."""
    opts, out = opts or PrepareOptions(), Path(out)
    job = Job("speechocean762", out, {"test_only": test_only}, source_identity(src), opts)
    if (done := job.done()) is not None:
        return done
    found = collect(SPEC, src, out, make_utterance, splits=["test"] if test_only else None)
    kept, report = run_filters({s: found.get(s, []) for s in (("test",) if test_only else ("train", "test"))}, opts)
    if test_only:
        return job.finish(kept, report)
    return job.finish({**split_by_speaker(kept["train"], opts.train_dev(), opts.seed), "test": kept["test"]}, report,
                      notes={"splits": "train and dev carved from the official train split by speaker; test official"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, SPEC.hub_id, "hub id, or a local copy (the repository's data/*.parquet, or save_to_disk)")
    p.add_argument("--test-only", action="store_true", help="only the official test split, as test.jsonl")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_speechocean762(args.src, args.out, args.test_only, PrepareOptions.from_args(args))
