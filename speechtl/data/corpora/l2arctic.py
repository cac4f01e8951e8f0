"""L2-ARCTIC: 24 non-native speakers of English (4 per L1) reading the CMU ARCTIC prompts, plus the
spontaneous "suitcase" story of 22 of them. Licence CC BY-NC 4.0; download (free, with a form) from
https://psi.engr.tamu.edu/l2-arctic-corpus/ and unpack every speaker's zip into one folder::

    L2ARCTIC/ABA/wav/arctic_a0001.wav         L2ARCTIC/ABA/transcript/arctic_a0001.txt
    L2ARCTIC/ABA/annotation/arctic_a0001.TextGrid   (manual phone annotation, about 150 per speaker)
    L2ARCTIC/suitcase_corpus/wav/aba.wav      L2ARCTIC/suitcase_corpus/transcript/aba.txt

Speakers are split train/dev/test by speaker within each L1 (with 4 speakers: 2/1/1). All speakers
read the same prompts, so the prompts are split too (same shares, seeded): a dev or test speaker keeps
only the prompts no training speaker read, and the WER measures the accent, not a memorised sentence
(``--shared-prompts`` turns this off). The suitcase recordings (about a minute each, longer than
Whisper's 30 s window) are kept apart in ``suitcase.jsonl``: they are the same speakers as the read
speech, so that set is outside the speaker-disjoint splits and is not duration-filtered.
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
    run_filters,
    split_list,
)
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import filter_utterances, make_text_disjoint, split_by_speaker
from speechtl.io import progress

LOG = logging.getLogger("speechtl.data.l2arctic")

#: Speaker -> (gender, L1), from the corpus README. The corpus calls Mandarin speakers "Chinese".
SPEAKERS: dict[str, tuple[str, str]] = {
    "ABA": ("M", "arabic"), "SKA": ("F", "arabic"), "YBAA": ("M", "arabic"), "ZHAA": ("F", "arabic"),
    "BWC": ("M", "mandarin"), "LXC": ("F", "mandarin"), "NCC": ("F", "mandarin"), "TXHC": ("M", "mandarin"),
    "ASI": ("M", "hindi"), "RRBI": ("M", "hindi"), "SVBI": ("F", "hindi"), "TNI": ("F", "hindi"),
    "HJK": ("F", "korean"), "HKK": ("M", "korean"), "YDCK": ("F", "korean"), "YKWK": ("M", "korean"),
    "EBVS": ("M", "spanish"), "ERMS": ("M", "spanish"), "MBMPS": ("F", "spanish"), "NJS": ("F", "spanish"),
    "HQTV": ("M", "vietnamese"), "PNV": ("F", "vietnamese"), "THV": ("F", "vietnamese"), "TLV": ("M", "vietnamese"),
}
L1S = sorted({l1 for _, l1 in SPEAKERS.values()})
ALIASES = {"chinese": "mandarin"}
SUITCASE = "suitcase_corpus"
MAX_LISTED = 10


def resolve_accents(accents: list[str] | None) -> list[str]:
    if not accents:
        return L1S
    names = [ALIASES.get(a.lower(), a.lower()) for a in accents]
    unknown = [a for a in names if a not in L1S]
    if unknown:
        raise ManifestError(f"--accents: unknown L2-ARCTIC L1(s) {unknown}; known: {', '.join(L1S)}")
    return names


def speaker_dirs(root: Path) -> list[Path]:
    """Every ``<SPEAKER>/wav`` folder under ``root``; an unknown speaker is an error, not a silent skip."""
    if not root.is_dir():
        raise ManifestError(f"--src {root}: no such folder; download L2-ARCTIC from "
                            "https://psi.engr.tamu.edu/l2-arctic-corpus/ and point --src at the unpacked folder")
    dirs = sorted(d for d in root.iterdir() if (d / "wav").is_dir() and d.name != SUITCASE)
    unknown = [d for d in dirs if d.name.upper() not in SPEAKERS]
    if unknown:
        raise ManifestError(f"{unknown[0]}: unknown L2-ARCTIC speaker '{unknown[0].name}' (known: "
                            f"{', '.join(sorted(SPEAKERS))}); remove or rename the folder")
    if not dirs:
        raise ManifestError(f"{root}: no L2-ARCTIC speaker folders (ABA/wav/*.wav, ABA/transcript/*.txt, …); "
                            "point --src at the folder that holds ABA/, ASI/, …")
    return dirs


def read_transcript(path: Path) -> str:
    try:
        return " ".join(path.read_text(encoding="utf-8").split())
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: transcript is not valid UTF-8 ({e.reason}); re-download the speaker") from e


def _utterance(wav: Path, txt: Path, speaker: str, uid: str, annotation: Path) -> Utterance:
    gender, l1 = SPEAKERS[speaker]
    return Utterance(id=uid, audio=str(wav.resolve()), duration=audio_duration(wav, str(wav)),
                     text=read_transcript(txt), speaker=speaker, accent=l1,
                     meta={"corpus": "l2arctic", "gender": gender, "l1": l1, "prompt": wav.stem,
                           "annotated": annotation.is_file()})


def read_speaker(d: Path) -> list[Utterance]:
    speaker = d.name.upper()
    wavs = sorted((d / "wav").glob("*.wav"))
    missing = [w for w in wavs if not (d / "transcript" / f"{w.stem}.txt").is_file()]
    if missing:
        shown = ", ".join(w.name for w in missing[:MAX_LISTED])
        raise ManifestError(f"{d / 'transcript'}: no transcript for {len(missing)} of {len(wavs)} wav files "
                            f"({shown}{', …' if len(missing) > MAX_LISTED else ''}); every wav/<utt>.wav needs "
                            "transcript/<utt>.txt: unpack the speaker's zip again")
    orphans = {t.stem for t in (d / "transcript").glob("*.txt")} - {w.stem for w in wavs}
    if orphans:
        LOG.warning("%s: %d transcripts have no wav file and are skipped", d, len(orphans))
    return [_utterance(w, d / "transcript" / f"{w.stem}.txt", speaker, f"{speaker}-{w.stem}",
                       d / "annotation" / f"{w.stem}.TextGrid") for w in wavs]


def read_suitcase(root: Path, speakers: set[str]) -> list[Utterance]:
    folder = root / SUITCASE
    out = []
    for wav in sorted((folder / "wav").glob("*.wav")) if folder.is_dir() else []:
        speaker = wav.stem.upper()
        if speaker not in SPEAKERS:
            raise ManifestError(f"{wav}: unknown L2-ARCTIC speaker '{wav.stem}' in the suitcase corpus")
        if speaker not in speakers:
            continue
        txt = folder / "transcript" / f"{wav.stem}.txt"
        if not txt.is_file():
            raise ManifestError(f"{wav}: no transcript {txt}; unpack suitcase_corpus.zip again")
        u = _utterance(wav, txt, speaker, f"{speaker}-suitcase", folder / "annotation" / f"{wav.stem}.TextGrid")
        u.meta["subset"] = "suitcase"
        del u.meta["prompt"]
        out.append(u)
    return out


def prepare_l2arctic(src: str | os.PathLike, out: str | os.PathLike, accents: list[str] | None = None,
                     opts: PrepareOptions | None = None, shared_prompts: bool = False) -> dict[str, Path]:
    """Write ``train``/``dev``/``test`` (speaker-disjoint within each L1) and ``suitcase`` manifests.

    Every speaker reads the same ARCTIC prompts, so by default the prompts are dealt out to the sets as
    well (a test speaker keeps only the test prompts); ``shared_prompts`` keeps every recording instead.
    """
    opts = opts or PrepareOptions()
    root, l1s = Path(src).expanduser(), resolve_accents(accents)
    dirs = [d for d in speaker_dirs(root) if SPEAKERS[d.name.upper()][1] in l1s]
    job = Job("l2arctic", Path(out), {"accents": l1s, "shared_prompts": shared_prompts},
              files_fingerprint(p for d in [*dirs, root / SUITCASE] if d.is_dir() for p in d.rglob("*.*")), opts)
    if (done := job.done()) is not None:
        return done
    if not dirs:
        wanted = [s for s, (_, l1) in SPEAKERS.items() if l1 in l1s]
        raise ManifestError(f"{root}: none of the speakers of {l1s} is there (expected folders {wanted})")
    LOG.info("reading %d speakers (%s) from %s", len(dirs), ", ".join(sorted({SPEAKERS[d.name.upper()][1]
                                                                             for d in dirs})), root)
    utts = [u for d in progress(dirs, desc="l2arctic", unit="speaker", leave=False) for u in read_speaker(d)]
    kept, report = run_filters({"read speech": utts}, opts)
    sets = split_by_speaker(kept["read speech"], opts.fractions, opts.seed)
    dropped = {} if shared_prompts else make_text_disjoint(sets, lambda u: u.meta["prompt"], opts.fractions, opts.seed)
    suitcase, _ = filter_utterances(read_suitcase(root, {d.name.upper() for d in dirs}), max_duration=None,
                                    report=report, what="suitcase")
    return job.finish({**sets, "suitcase": suitcase}, report, disjoint=list(sets), notes={
        "suitcase": "same speakers as the read speech; outside the speaker-disjoint splits",
        "prompts": "shared across sets" if shared_prompts else "disjoint across sets",
        "dropped_for_prompt_overlap": dropped})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, None, "the unpacked L2-ARCTIC folder (holding ABA/, ASI/, …, suitcase_corpus/)")
    p.add_argument("--accents", default=None, help=f"comma-separated L1s, from {', '.join(L1S)} (default: all)")
    p.add_argument("--shared-prompts", action="store_true",
                   help="keep every recording, though train and test speakers then read the same sentences")


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_l2arctic(args.src, args.out, split_list(args.accents), PrepareOptions.from_args(args),
                            args.shared_prompts)
