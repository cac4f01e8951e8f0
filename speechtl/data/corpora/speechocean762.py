"""speechocean762: 5,000 English sentences read by 250 Mandarin-L1 speakers (half of them children),
scored for pronunciation by five experts. Licence Apache 2.0 (free for commercial use). Hub:
``mispeech/speechocean762`` (parquet), splits ``train`` and ``test`` (125 different speakers each),
columns ``text``, ``speaker``, ``gender``, ``age``, ``audio`` and the sentence scores ``accuracy``,
``completeness``, ``fluency``, ``prosodic``, ``total`` (kept as metadata; word-level ``words`` is not).

``--src`` is the hub id, a local copy of the hub repository, or the corpus as OpenSLR (and its GitHub
repository) ship it: ``train/`` and ``test/`` Kaldi data dirs (``wav.scp``, ``text``, ``utt2spk``,
``spk2age``, ``spk2gender``) whose ``wav.scp`` names audio under ``WAVE/`` (WAV or FLAC), relative to
the corpus root. Both give the same utterance ids (``so762-<speaker>-<utterance>``) and keep age and
gender per utterance.

The official test split is kept; ``train`` and ``dev`` are carved from the official train split by
speaker (``--fractions``' TEST share is ignored). ``--test-only`` reads and writes the test split only.
``--age-groups`` writes the test split by age instead, ``test_adults`` (19 and over) and ``test_children``:
children's speech is harder for every recogniser, and a report should show each group.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from speechtl.data.corpora.common import Job, PrepareOptions, add_common_arguments, run_filters, safe_name
from speechtl.data.corpora.hub import HubDataset, Row, collect, source_identity
from speechtl.data.kaldi import read_kaldi_dir
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import split_by_speaker

SPEC = HubDataset(
    name="speechocean762", hub_id="mispeech/speechocean762", columns=("text", "speaker", "audio"),
    download="Without internet: on a machine with it run `huggingface-cli download --repo-type dataset "
             "mispeech/speechocean762 --local-dir speechocean762`, copy the folder here and point --src at it.")
META = ("gender", "age", "accuracy", "completeness", "fluency", "prosodic", "total")
SPLITS = ("train", "test")
#: Adults are 19 and over (the corpus's own grouping: its children are 6-15).
ADULT_AGE = 19
AGE_GROUPS = {"adults": lambda age: age >= ADULT_AGE, "children": lambda age: age < ADULT_AGE}


def utterance_id(speaker: str, name: str) -> str:
    return safe_name(f"so762-{speaker}-{name}")


def make_utterance(row: Row) -> Utterance:
    r = row.data
    if row.split not in ("train", "test"):
        raise ManifestError(f"{row.where}: unknown split '{row.split}'; speechocean762 has train and test")
    audio = r.get("audio")
    name = Path(str(audio.get("path") or "")).stem if isinstance(audio, dict) else ""
    speaker = str(r["speaker"])
    return Utterance(id=utterance_id(speaker, name or row.where.rsplit(' ', 1)[-1]), audio="",
                     duration=0.0, text=" ".join(str(r["text"] or "").split()), speaker=speaker, accent="mandarin",
                     meta={"corpus": "speechocean762", **{k: r[k] for k in META if r.get(k) is not None}})


def is_kaldi_layout(src: str) -> bool:
    """The corpus's own layout (OpenSLR, GitHub): ``train/`` and ``test/`` Kaldi dirs under ``src``."""
    root = Path(src).expanduser()
    return any((root / split / "wav.scp").is_file() for split in SPLITS)


def read_kaldi_layout(src: str, splits: tuple[str, ...]) -> dict[str, list[Utterance]]:
    """Utterances of each official split from the corpus's Kaldi dirs (audio stays where it is)."""
    root = Path(src).expanduser().resolve()
    sets = {}
    for split in splits:
        d = root / split
        if not (d / "wav.scp").is_file():
            raise ManifestError(f"{d}: no wav.scp; speechocean762's layout has {' and '.join(SPLITS)}/ Kaldi dirs "
                                f"(wav.scp, text, utt2spk, spk2age, spk2gender) under {root}")
        sets[split] = [replace(u, id=utterance_id(u.speaker, u.id), text=" ".join(u.text.split()),
                               meta={"corpus": "speechocean762", **u.meta})
                       for u in read_kaldi_dir(d, accent="mandarin", audio_root=root)]
    return sets


def by_age(utts: list[Utterance], where: str) -> dict[str, list[Utterance]]:
    """``test_adults`` and ``test_children`` from utterances carrying an ``age``."""
    missing = sorted({u.speaker for u in utts if not isinstance(u.meta.get("age"), int)})
    if missing:
        raise ManifestError(f"{where}: no age for speaker(s) {missing[:5]}; --age-groups needs spk2age (or the "
                            "hub's age column)")
    return {f"test_{g}": [u for u in utts if keep(u.meta["age"])] for g, keep in AGE_GROUPS.items()}


def prepare_speechocean762(src: str, out: str | os.PathLike, test_only: bool = False,
                           opts: PrepareOptions | None = None, age_groups: bool = False) -> dict[str, Path]:
    """Write train/dev (carved from the official train split) and test manifests, or test only."""
    opts, out = opts or PrepareOptions(), Path(out)
    kaldi = is_kaldi_layout(src)
    params = {"test_only": test_only, "age_groups": age_groups, "layout": "kaldi" if kaldi else "hub"}
    job = Job("speechocean762", out, params, source_identity(src), opts)
    if (done := job.done()) is not None:
        return done
    splits = ("test",) if test_only else SPLITS
    if kaldi:
        found = read_kaldi_layout(src, splits)
    else:
        found = collect(SPEC, src, out, make_utterance, splits=list(splits))
    kept, report = run_filters({s: found.get(s, []) for s in splits}, opts)
    test = by_age(kept["test"], f"{src} (test)") if age_groups else {"test": kept["test"]}
    sets = test if test_only else {**split_by_speaker(kept["train"], opts.train_dev(), opts.seed), **test}
    notes = {"layout": "Kaldi dirs (OpenSLR)" if kaldi else "hub"}
    if not test_only:
        notes["splits"] = "train and dev carved from the official train split by speaker; test official"
    if age_groups:
        notes["age_groups"] = f"test_adults: age >= {ADULT_AGE}; test_children: younger"
    return job.finish(sets, report, notes=notes)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, SPEC.hub_id, "hub id, a local copy (the repository's data/*.parquet, or save_to_disk), "
                         "or the corpus as OpenSLR ships it (train/ and test/ Kaldi dirs, audio under WAVE/)")
    p.add_argument("--test-only", action="store_true", help="only the official test split, as test.jsonl")
    p.add_argument("--age-groups", action="store_true",
                   help=f"write the test split as test_adults.jsonl (age >= {ADULT_AGE}) and test_children.jsonl")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_speechocean762(args.src, args.out, args.test_only, PrepareOptions.from_args(args), args.age_groups)
