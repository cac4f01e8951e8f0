"""Import and export Kaldi data dirs (``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``segments``).

Kaldi has no accent file; we read and write ``utt2accent`` (and ``utt2lang``) beside the standard
ones, in the same two-column format, so a round trip keeps every manifest field. Per-speaker tables
a corpus ships (``spk2gender``, and ``spk2age`` as speechocean762 has it) are kept per utterance
as manifest metadata (``gender``, ``age``).

As Kaldi writes them, columns are separated by any whitespace (corpora ship tab-separated ``text``),
and a relative ``wav.scp`` path is relative to the directory the recipe runs in: usually the corpus
root, the data dir's parent (speechocean762: ``train/wav.scp`` names ``WAVE/SPEAKER0001/….flac``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import soundfile as sf

from speechtl.data.manifest import ManifestError, Utterance
from speechtl.io import atomic_write, text_lines

#: The manifest field that keeps a segment's recording id from a Kaldi ``segments`` file.
RECORDING = "recording"


def _read_table(path: Path, required: bool = True) -> dict[str, tuple[str, int]]:
    """Read ``key value...`` lines into {key: (rest, line number)}, naming file and line on error."""
    if not path.is_file():
        if required:
            raise ManifestError(f"{path}: required Kaldi file is missing")
        return {}
    table: dict[str, tuple[str, int]] = {}
    for lineno, raw in enumerate(text_lines(path), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise ManifestError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from e
        if not line:
            continue
        key, *rest_ = line.split(None, 1)
        rest = rest_[0] if rest_ else ""
        if key in table:
            raise ManifestError(f"{path}:{lineno}: duplicate key '{key}'")
        table[key] = (rest.strip(), lineno)
    return table


#: Per-speaker Kaldi tables kept as per-utterance metadata, and how each value is read.
SPEAKER_TABLES = {"spk2gender": ("gender", str), "spk2age": ("age", int)}


def _resolve_audio(path: str, d: Path, audio_root: Path | None, where: str) -> Path:
    """The file a ``wav.scp`` entry names: absolute, or relative to ``audio_root`` (given) or else to the
    data dir or its parent, whichever holds it; a missing file is an error naming the ``wav.scp`` line."""
    p = Path(path)
    bases = [] if p.is_absolute() else ([audio_root] if audio_root is not None else [d, d.parent])
    candidates = [p] if p.is_absolute() else [b / p for b in bases]
    for c in candidates:
        if c.is_file():
            return c
    looked = " or ".join(str(c) for c in candidates)
    raise ManifestError(f"{where}: audio file not found: {looked}")


def _speaker_meta(d: Path) -> dict[str, dict[str, object]]:
    """{speaker: {gender: …, age: …}} from whichever per-speaker tables the dir has."""
    meta: dict[str, dict[str, object]] = defaultdict(dict)
    for name, (field_name, kind) in SPEAKER_TABLES.items():
        for spk, (value, lineno) in _read_table(d / name, required=False).items():
            try:
                meta[spk][field_name] = kind(value)
            except ValueError as e:
                raise ManifestError(f"{d / name}:{lineno}: '{value}' is not a valid {field_name}") from e
    return meta


def read_kaldi_dir(data_dir: str | os.PathLike, accent: str | None = None, lang: str = "en",
                   audio_root: str | os.PathLike | None = None) -> list[Utterance]:
    """Turn a Kaldi data dir into utterances; piped ``wav.scp`` commands are refused (we never run them).

    Relative ``wav.scp`` paths are resolved against ``audio_root`` when given, else against the data dir
    or its parent (see the module docstring); every file must exist.
    """
    d = Path(data_dir)
    root = Path(audio_root) if audio_root is not None else None
    wav = _read_table(d / "wav.scp")
    text = _read_table(d / "text")
    utt2spk = _read_table(d / "utt2spk")
    segments = _read_table(d / "segments", required=False)
    utt2dur = _read_table(d / "utt2dur", required=False)
    utt2accent = _read_table(d / "utt2accent", required=False)
    utt2lang = _read_table(d / "utt2lang", required=False)
    speakers = _speaker_meta(d)
    if not utt2accent and accent is None:
        raise ManifestError(f"{d}: no utt2accent file; pass an accent label for the whole dir (--accent)")
    utts = []
    for uid, (txt, lineno) in text.items():
        where = f"{d / 'text'}:{lineno}"
        if uid not in utt2spk:
            raise ManifestError(f"{where}: utterance '{uid}' has no line in utt2spk")
        if not txt:
            raise ManifestError(f"{where}: utterance '{uid}' has an empty transcript")
        rec, offset, duration = uid, None, None
        meta: dict[str, object] = dict(speakers.get(utt2spk[uid][0], {}))
        if segments:
            if uid not in segments:
                raise ManifestError(f"{where}: utterance '{uid}' has no line in segments")
            seg, seg_line = segments[uid]
            parts = seg.split()
            if len(parts) != 3:
                raise ManifestError(f"{d / 'segments'}:{seg_line}: expected 'utt rec start end'")
            rec, start, end = parts[0], float(parts[1]), float(parts[2])
            offset, duration = start, end - start
            meta[RECORDING] = rec  # so that to-kaldi writes the same recording ids back
        if rec not in wav:
            raise ManifestError(f"{where}: recording '{rec}' has no line in wav.scp")
        path, wav_line = wav[rec]
        if path.endswith("|"):
            raise ManifestError(f"{d / 'wav.scp'}:{wav_line}: piped commands are not supported; "
                                "convert the audio to files first")
        audio = _resolve_audio(path, d, root, f"{d / 'wav.scp'}:{wav_line}")
        if duration is None:
            if uid in utt2dur:
                duration = float(utt2dur[uid][0])
            else:
                try:
                    duration = sf.info(str(audio)).duration
                except (RuntimeError, OSError) as e:
                    raise ManifestError(f"{d / 'wav.scp'}:{wav_line}: can't read audio {audio}: {e}") from e
        utts.append(Utterance(
            id=uid, audio=str(audio), duration=float(duration), text=txt, speaker=utt2spk[uid][0],
            accent=utt2accent[uid][0] if uid in utt2accent else accent,  # type: ignore[arg-type]
            offset=offset, lang=utt2lang[uid][0] if uid in utt2lang else lang, meta=meta))
    return utts


def write_kaldi_dir(utts: list[Utterance], data_dir: str | os.PathLike) -> None:
    """Write a sorted Kaldi data dir; segments (utterances with an offset, even 0) get a ``segments`` file.

    A recording keeps the id it had in the Kaldi dir it was read from (``recording`` in the manifest),
    else it is named after its file.
    """
    perturbed = [u.id for u in utts if u.meta.get("speed_perturb", 1.0) != 1.0]
    if perturbed:
        raise ManifestError(f"{len(perturbed)} utterance(s) ({perturbed[0]}, ...) are speed-perturbed copies, which a "
                            "Kaldi wav.scp can't name: write the source manifest and run Kaldi's "
                            "utils/data/perturb_data_dir_speed_3way.sh on that dir")
    d = Path(data_dir)
    utts = sorted(utts, key=lambda u: u.id)
    use_segments = any(u.offset is not None for u in utts)
    recs: dict[str, str] = {}
    rec_of: dict[str, str] = {}
    spk2utt: dict[str, list[str]] = defaultdict(list)
    for u in utts:
        if u.audio not in rec_of:
            rec = str(u.meta.get(RECORDING) or Path(u.audio).stem) if use_segments else u.id
            if recs.get(rec, u.audio) != u.audio:
                rec = f"{rec}-{len(recs)}"
            recs[rec], rec_of[u.audio] = u.audio, rec
        spk2utt[u.speaker].append(u.id)
    files = {
        "text": [f"{u.id} {u.text}" for u in utts],
        "utt2spk": [f"{u.id} {u.speaker}" for u in utts],
        "utt2dur": [f"{u.id} {u.duration:.3f}" for u in utts],
        "utt2accent": [f"{u.id} {u.accent}" for u in utts],
        "utt2lang": [f"{u.id} {u.lang}" for u in utts],
        "spk2utt": [f"{s} {' '.join(ids)}" for s, ids in sorted(spk2utt.items())],
    }
    if use_segments:
        files["wav.scp"] = [f"{r} {a}" for r, a in sorted(recs.items())]
        files["segments"] = [f"{u.id} {rec_of[u.audio]} {u.offset or 0.0:.3f} {(u.offset or 0.0) + u.duration:.3f}"
                             for u in utts]
    else:
        files["wav.scp"] = [f"{u.id} {u.audio}" for u in utts]
    d.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        with atomic_write(d / name) as f:
            f.write("\n".join(lines) + "\n")
