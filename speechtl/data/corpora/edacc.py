"""EdAcc, the Edinburgh International Accents of English Corpus: 40 h of dyadic video-call
conversations by speakers of many first- and second-language Englishes. Licence CC BY-SA 4.0. Hub:
``edinburghcstr/edacc`` (parquet, no login), splits ``validation`` and ``test``, columns ``speaker``,
``text``, ``accent``, ``raw_accent``, ``gender``, ``l1``, ``audio``.

EdAcc has no training split. speechtl carves ``train`` and ``dev`` from the official validation
split, conversation-disjoint (both speakers of a call go to the same side, since each is audible in
the other's channel) and stratified by accent; ``--fractions`` gives their shares (its TEST share is
ignored). The official ``test`` split is kept whole; a validation speaker who also appears in test
is dropped from validation, with a count in the log. Transcripts lose their non-speech tags
(``<laugh>``, ``<overlap>``, …); segments marked IGNORE_TIME_SEGMENT_IN_SCORING are dropped and counted.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from speechtl.data.corpora.common import (
    Job,
    PrepareOptions,
    add_common_arguments,
    lowered,
    run_filters,
    safe_name,
    split_list,
)
from speechtl.data.corpora.hub import HubDataset, Row, collect, source_identity
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import drop_shared_speakers, split_by_speaker

SPEC = HubDataset(
    name="edacc", hub_id="edinburghcstr/edacc", columns=("speaker", "text", "accent", "audio"),
    download="Without internet: on a machine with it run `huggingface-cli download --repo-type dataset "
             "edinburghcstr/edacc --local-dir edacc` (7 GB), copy the folder here and point --src at it.")
TAG = re.compile(r"<[^<>]*>")
IGNORE = "IGNORE_TIME_SEGMENT_IN_SCORING"
CONVERSATION = re.compile(r"^(.*-C\d+)-[A-Za-z0-9]+$")


def clean_text(text: str) -> str:
    """Drop non-speech tags and scoring-exclusion markers; what is left is what a recogniser should output."""
    if IGNORE in text:
        return ""
    return " ".join(TAG.sub(" ", text).split())


def conversation(speaker: str) -> str:
    """``EDACC-C06-A`` -> ``EDACC-C06``: the unit that must not straddle train and dev."""
    m = CONVERSATION.match(speaker)
    return m.group(1) if m else speaker


def make_utterance(row: Row, accents: set[str] | None) -> Utterance | None:
    r = row.data
    accent = str(r["accent"] or "").strip()
    if accents and accent.lower() not in accents:
        return None
    if row.split not in ("validation", "test"):
        raise ManifestError(f"{row.where}: unknown split '{row.split}'; EdAcc has validation and test")
    raw = str(r["text"] or "")
    meta = {k: str(r[k]) for k in ("raw_accent", "gender", "l1") if r.get(k) is not None}
    text = clean_text(raw)
    if text != raw.strip():
        meta["raw_text"] = raw
    return Utterance(id=safe_name(f"{r['speaker']}-{row.split}-{row.number:06d}"), audio="", duration=0.0,
                     text=text, speaker=str(r["speaker"]), accent=accent or "unknown",
                     meta={"corpus": "edacc", "conversation": conversation(str(r["speaker"])), **meta})


def prepare_edacc(src: str, out: str | os.PathLike, accents: list[str] | None = None,
                  opts: PrepareOptions | None = None) -> dict[str, Path]:
    """Write train/dev (carved from validation) and test (official) manifests."""
    opts, out = opts or PrepareOptions(), Path(out)
    want = lowered(accents)
    job = Job("edacc", out, {"accents": sorted(want or [])}, source_identity(src), opts)
    if (done := job.done()) is not None:
        return done
    found = collect(SPEC, src, out, lambda row: make_utterance(row, want))
    kept, report = run_filters({s: found.get(s, []) for s in ("validation", "test")}, opts)
    if not kept["validation"] or not kept["test"]:
        raise ManifestError(f"{src}: EdAcc needs both its validation and test splits, found "
                            f"{ {k: len(v) for k, v in kept.items()} }. {SPEC.download}")
    dropped = drop_shared_speakers(kept, ("test", "validation"))
    sets = {**split_by_speaker(kept["validation"], opts.train_dev(), opts.seed,
                                     group_of=lambda u: u.meta["conversation"]), "test": kept["test"]}
    return job.finish(sets, report, notes={
        "splits": "train and dev carved from the official validation split by conversation; test is official",
        "dropped_for_speaker_overlap": dropped})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, SPEC.hub_id, "hub id, or a local copy (the repository's data/*.parquet, or save_to_disk)")
    p.add_argument("--accents", default=None, help="comma-separated accent labels to keep (default: all)")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_edacc(args.src, args.out, split_list(args.accents), PrepareOptions.from_args(args))
