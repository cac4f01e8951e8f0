"""AfriSpeech-200: 200 h of read African-accented English (120 accents, 13 countries), clinical and
general domain. Licence CC BY-NC-SA 4.0. Hub: ``intronhealth/afrispeech-200`` (config ``all`` or one
accent); a local copy is a ``save_to_disk`` folder or the same columns in parquet/arrow files.

Columns used: ``speaker_id`` (older copies: ``user_ids``), ``audio_id`` (or ``path``), ``audio``,
``transcript``, ``accent``, ``domain``, ``country``, and, kept as metadata, ``age_group``, ``gender``,
``duration``. The official train/dev/test splits are kept (results stay comparable with the paper);
any speaker found in two of them is removed from the less important one (test is kept whole), and
the count is logged. ``--resplit`` pools them and splits by speaker instead.
"""

from __future__ import annotations

import argparse
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
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import drop_shared_speakers, split_by_speaker

SPEC = HubDataset(
    name="afrispeech", hub_id="intronhealth/afrispeech-200",
    columns=("audio", "transcript", "accent", "domain", "country"),
    download="The hub copy is a loading script, which datasets>=4 no longer runs. On a machine with internet: "
             "pip install 'datasets<4', then in Python: datasets.load_dataset('intronhealth/afrispeech-200', 'all', "
             "trust_remote_code=True).save_to_disk('afrispeech200'); then --src afrispeech200.")
DOMAINS = ("all", "clinical", "general")
SPLIT_NAMES = {"train": "train", "dev": "dev", "validation": "dev", "test": "test"}
META = ("age_group", "gender", "country", "domain")


def make_utterance(row: Row, domain: str, countries: set[str] | None, accents: set[str] | None) -> Utterance | None:
    r = row.data
    if domain != "all" and str(r["domain"]).strip().lower() != domain:
        return None
    if countries and str(r["country"]).strip().upper() not in countries:
        return None
    accent = str(r["accent"]).strip().lower()
    if accents and accent not in accents:
        return None
    speaker = r.get("speaker_id") or r.get("user_ids")
    if not speaker:
        raise ManifestError(f"{row.where}: no speaker_id (or user_ids) value; is this intronhealth/afrispeech-200?")
    if row.split not in SPLIT_NAMES:
        raise ManifestError(f"{row.where}: unknown split '{row.split}' (AfriSpeech has train, dev, test)")
    uid = safe_name(Path(str(r.get("audio_id") or r.get("path") or row.where)).stem)
    meta = {k: r[k] for k in META if r.get(k) is not None}
    return Utterance(id=uid, audio="", duration=0.0, text=" ".join(str(r["transcript"] or "").split()),
                     speaker=str(speaker), accent=accent, meta={"corpus": "afrispeech", **meta})


def prepare_afrispeech(src: str, out: str | os.PathLike, config: str = "all", domain: str = "all",
                       countries: list[str] | None = None, accents: list[str] | None = None, resplit: bool = False,
                       opts: PrepareOptions | None = None) -> dict[str, Path]:
    """Write train/dev/test manifests of the selected countries, accents and domain."""
    opts, out = opts or PrepareOptions(), Path(out)
    if domain not in DOMAINS:
        raise ManifestError(f"--domain must be one of {', '.join(DOMAINS)}, got '{domain}'")
    want_c = {c.upper() for c in countries} if countries else None
    want_a = lowered(accents)
    job = Job("afrispeech", out, {"config": config, "domain": domain, "countries": sorted(want_c or []),
                                  "accents": sorted(want_a or []), "resplit": resplit},
              source_identity(src), opts)
    if (done := job.done()) is not None:
        return done
    found = collect(SPEC, src, out, lambda row: make_utterance(row, domain, want_c, want_a), configs=[config])
    official: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    for split, utts in found.items():
        official[SPLIT_NAMES[split]].extend(utts)
    kept, report = run_filters(official, opts)
    if resplit:
        sets = split_by_speaker([u for us in kept.values() for u in us], opts.fractions, opts.seed)
        return job.finish(sets, report, notes={"splits": "official splits pooled and split by speaker"})
    dropped = drop_shared_speakers(kept, ("test", "dev", "train"))
    return job.finish(kept, report, notes={"splits": "official", "dropped_for_speaker_overlap": dropped},
                      if_empty="the selection leaves an official split without data; widen it, or add --resplit "
                               "to split the selection by speaker instead")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, SPEC.hub_id, "hub id, or a local copy (save_to_disk folder, parquet/arrow files)")
    p.add_argument("--config", default="all", help="hub config: 'all' or one accent (e.g. yoruba)")
    p.add_argument("--domain", default="all", choices=DOMAINS, help="clinical, general, or both")
    p.add_argument("--countries", default=None, help="comma-separated country codes to keep, e.g. NG,GH")
    p.add_argument("--accents", default=None, help="comma-separated accents to keep, e.g. yoruba,igbo,hausa")
    p.add_argument("--resplit", action="store_true", help="pool the official splits and split by speaker")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_afrispeech(args.src, args.out, args.config, args.domain, split_list(args.countries),
                              split_list(args.accents), args.resplit, PrepareOptions.from_args(args))
