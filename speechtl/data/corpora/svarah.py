"""Svarah: 9.6 h of Indian English from 117 speakers with 19 first languages, read and spontaneous.
Licence CC BY 4.0. A test set only. Hub: ``ai4bharat/Svarah`` (gated: accept its terms, then
``huggingface-cli login``), split ``test``, columns ``audio_filepath`` (the audio), ``duration``,
``text``, ``gender``, ``age-group``, ``primary_language``, ``native_place_state``,
``native_place_district``, ``highest_qualification``, ``job_category``, ``occupation_domain``.

The accent label is the speaker's first language (``primary_language``, lower-cased). The hub copy has
no speaker column, so speakers are identified by their metadata profile (first language, place,
gender, age group, education, job): an approximation that may merge two speakers who share all of it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
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
from speechtl.data.manifest import Utterance

PROFILE = ("primary_language", "native_place_state", "native_place_district", "gender", "age-group",
           "highest_qualification", "job_category", "occupation_domain")
SPEC = HubDataset(
    name="svarah", hub_id="ai4bharat/Svarah", columns=("audio_filepath", "text", "primary_language"),
    audio="audio_filepath",
    download="Svarah is gated: accept its terms on https://huggingface.co/datasets/ai4bharat/Svarah, run "
             "`huggingface-cli login`, then `huggingface-cli download --repo-type dataset ai4bharat/Svarah "
             "--local-dir svarah` and point --src at that folder.")


def speaker_of(r: dict) -> str:
    profile = "|".join(str(r.get(k, "")) for k in PROFILE)
    return f"svarah-{safe_name(str(r['primary_language']).lower())}-{hashlib.sha1(profile.encode()).hexdigest()[:8]}"


def make_utterance(row: Row, languages: set[str] | None) -> Utterance | None:
    r = row.data
    l1 = str(r["primary_language"] or "unknown").strip().lower()
    if languages and l1 not in languages:
        return None
    audio = r.get("audio_filepath")
    name = Path(str(audio.get("path") or "")).stem if isinstance(audio, dict) else ""
    meta = {k.replace("-", "_"): str(r[k]) for k in PROFILE if r.get(k) is not None}
    return Utterance(id=safe_name(f"svarah-{row.number:05d}" + (f"-{name}" if name else "")), audio="", duration=0.0,
                     text=" ".join(str(r["text"] or "").split()), speaker=speaker_of(r), accent=l1, lang="en",
                     meta={"corpus": "svarah", **meta})


def prepare_svarah(src: str, out: str | os.PathLike, languages: list[str] | None = None,
                   opts: PrepareOptions | None = None) -> dict[str, Path]:
    """Write ``test.jsonl`` (Svarah is an evaluation set), optionally only some first languages."""
    opts, out = opts or PrepareOptions(), Path(out)
    want = lowered(languages)
    job = Job("svarah", out, {"languages": sorted(want or [])}, source_identity(src), opts)
    if (done := job.done()) is not None:
        return done
    found = collect(SPEC, src, out, lambda row: make_utterance(row, want))
    kept, report = run_filters({"test": [u for us in found.values() for u in us]}, opts)
    return job.finish(kept, report, notes={"speakers": "derived from each row's speaker metadata profile"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, SPEC.hub_id, "hub id (gated; log in first), or a local copy")
    p.add_argument("--languages", default=None, help="comma-separated first languages to keep, e.g. hindi,tamil")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_svarah(args.src, args.out, split_list(args.languages), PrepareOptions.from_args(args))
