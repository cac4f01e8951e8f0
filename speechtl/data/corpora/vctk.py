"""CSTR VCTK 0.92: 110 speakers of English with various accents, ~400 read sentences each. Licence
CC BY 4.0. Download ``VCTK-Corpus-0.92.zip`` from https://datashare.ed.ac.uk/handle/10283/3443, unzip
it and point ``--src`` at the folder holding::

    speaker-info.txt                      ID AGE GENDER ACCENTS REGION COMMENTS, one speaker a line
    txt/p225/p225_001.txt                 one sentence
    wav48_silence_trimmed/p225/p225_001_mic1.flac    (older releases: wav48/p225/p225_001.wav)

A hub copy (``CSTR-Edinburgh/vctk``: ``speaker_id``, ``audio``, ``text``, ``accent``, ``gender``,
``age``, ``region``) saved to disk or as parquet works too. The release has audio without text
(all of p315, a few others): those files are skipped and counted. The accent of each speaker comes
from speaker-info.txt; ``--accents Scottish`` keeps those speakers.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from speechtl.data.corpora.common import (
    Job,
    PrepareOptions,
    add_common_arguments,
    audio_duration,
    files_fingerprint,
    lowered,
    run_filters,
    safe_name,
    split_list,
)
from speechtl.data.corpora.hub import HubDataset, Row, collect, is_dataset_copy, source_identity
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import split_by_speaker
from speechtl.io import progress

LOG = logging.getLogger("speechtl.data.vctk")
SPEC = HubDataset(
    name="vctk", hub_id="CSTR-Edinburgh/vctk", columns=("speaker_id", "audio", "text", "accent"),
    download="Download VCTK-Corpus-0.92.zip from https://datashare.ed.ac.uk/handle/10283/3443, unzip it and "
             "point --src at the folder with speaker-info.txt, txt/ and wav48_silence_trimmed/.")
AUDIO_DIRS = (("wav48_silence_trimmed", "{utt}_{mic}.flac"), ("wav48", "{utt}.wav"))
#: Release 0.92 adds speaker s5, who may lack a line in speaker-info.txt: skipped, not an error.
NO_INFO_OK = {"s5"}


def read_speaker_info(path: Path) -> dict[str, dict[str, str]]:
    """speaker-info.txt -> {p225: {age, gender, accent, region}}; ids without the 'p' get one."""
    if not path.is_file():
        raise ManifestError(f"{path}: not found; {SPEC.download}")
    speakers = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].upper() == "ID":
            continue
        if len(fields) < 4:
            raise ManifestError(f"{path}:{lineno}: expected ID AGE GENDER ACCENT [REGION], got '{line.strip()}'")
        sid = fields[0] if not fields[0].isdigit() else f"p{fields[0]}"
        speakers[sid] = {"age": fields[1], "gender": fields[2], "accent": fields[3], "region": " ".join(fields[4:])}
    return speakers


def _audio_for(root: Path, speaker: str, utt: str, mic: str) -> Path | None:
    for folder, pattern in AUDIO_DIRS:
        p = root / folder / speaker / pattern.format(utt=utt, mic=mic)
        if p.is_file():
            return p
    return None


def read_local(root: Path, accents: set[str] | None, mic: str) -> list[Utterance]:
    info = read_speaker_info(root / "speaker-info.txt")
    audio_root = next((root / d for d, _ in AUDIO_DIRS if (root / d).is_dir()), None)
    if audio_root is None or not (root / "txt").is_dir():
        raise ManifestError(f"{root}: expected txt/ and wav48_silence_trimmed/ (or wav48/) folders. {SPEC.download}")
    unknown = sorted(d.name for d in audio_root.iterdir() if d.is_dir() and d.name not in info)
    if set(unknown) & NO_INFO_OK:
        LOG.warning("%s: %s have no line in speaker-info.txt (their accent is unknown) and are skipped",
                    audio_root, sorted(set(unknown) & NO_INFO_OK))
        unknown = [u for u in unknown if u not in NO_INFO_OK]
    if unknown:
        raise ManifestError(f"{audio_root / unknown[0]}: speaker(s) {unknown} are not in {root / 'speaker-info.txt'},"
                            " so their accent is unknown; add a line for each or remove the folders")
    utts, no_text, no_audio = [], 0, 0
    speakers = sorted(s for s, m in info.items() if not accents or m["accent"].lower() in accents)
    for spk in progress(speakers, desc="vctk", unit="speaker", leave=False):
        texts = {t.stem: t for t in (root / "txt" / spk).glob("*.txt")}
        audio_stems = {p.name.split("_mic")[0].removesuffix(".wav") for p in (audio_root / spk).glob("*.*")}
        no_text += len(audio_stems - set(texts))
        for stem, txt in sorted(texts.items()):
            wav = _audio_for(root, spk, stem, mic)
            if wav is None:
                no_audio += 1
                continue
            m = info[spk]
            utts.append(Utterance(id=stem, audio=str(wav.resolve()), duration=audio_duration(wav, str(txt)),
                                  text=" ".join(txt.read_text(encoding="utf-8", errors="replace").split()),
                                  speaker=spk, accent=m["accent"],
                                  meta={"corpus": "vctk", **{k: m[k] for k in ("gender", "age", "region")}}))
    if no_text or no_audio:
        LOG.warning("%s: skipped %d audio files without text and %d texts without %s audio (known gaps of the "
                    "release)", root, no_text, no_audio, mic)
    return utts


def make_utterance(row: Row, accents: set[str] | None) -> Utterance | None:
    r = row.data
    accent = str(r["accent"]).strip()
    if accents and accent.lower() not in accents:
        return None
    speaker = str(r["speaker_id"])
    file_stem = Path(str(r.get("file") or "")).stem.split("_mic")[0]
    uid = safe_name(file_stem or f"{speaker}_{r.get('text_id')}")
    meta = {k: str(r[k]) for k in ("gender", "age", "region") if r.get(k) is not None}
    return Utterance(id=uid, audio="", duration=0.0, text=" ".join(str(r["text"] or "").split()), speaker=speaker,
                     accent=accent, meta={"corpus": "vctk", **meta})


def prepare_vctk(src: str, out: str | os.PathLike, accents: list[str] | None = None, test_only: bool = False,
                 mic: str = "mic1", opts: PrepareOptions | None = None) -> dict[str, Path]:
    """Write train/dev/test manifests split by speaker within each accent, or only test.jsonl with ``test_only``."""
    opts, out, root = opts or PrepareOptions(), Path(out), Path(src).expanduser()
    want = lowered(accents)
    local = (root / "speaker-info.txt").is_file()
    if root.is_dir() and not local and not is_dataset_copy(root):
        raise ManifestError(f"{root}: no speaker-info.txt here, nor a saved copy of {SPEC.hub_id}. {SPEC.download}")
    source = files_fingerprint([root / "speaker-info.txt", *root.glob("txt/*/*.txt")]) if local else None
    job = Job("vctk", out, {"accents": sorted(want or []), "test_only": test_only, "mic": mic},
              source or source_identity(src), opts)
    if (done := job.done()) is not None:
        return done
    if local:
        utts = read_local(root, want, mic)
    else:
        utts = [u for us in collect(SPEC, src, out, lambda row: make_utterance(row, want)).values() for u in us]
    if not utts:
        raise ManifestError(f"{src}: no VCTK utterances with accent(s) {sorted(want or [])}; the labels are those "
                            "of speaker-info.txt (English, Scottish, Irish, NorthernIrish, Welsh, American, …)")
    kept, report = run_filters({"all": utts}, opts)
    sets = {"test": kept["all"]} if test_only else split_by_speaker(kept["all"], opts.fractions, opts.seed)
    return job.finish(sets, report)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, None, "the unzipped VCTK-Corpus-0.92 folder (or a saved hub copy)")
    p.add_argument("--accents", default=None, help="comma-separated accents of speaker-info.txt, e.g. Scottish")
    p.add_argument("--test-only", action="store_true", help="write every selected speaker to test.jsonl")
    p.add_argument("--mic", default="mic1", choices=("mic1", "mic2"), help="which microphone of release 0.92")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_vctk(args.src, args.out, split_list(args.accents), args.test_only, args.mic,
                        PrepareOptions.from_args(args))
