"""Rows of a Hugging Face dataset, from the Hub or from a local copy, with audio as files soundfile reads.

``--src`` is either a hub id (``edinburghcstr/edacc``), streamed with ``datasets`` so nothing large is
downloaded, or a local copy of the same dataset in one of the forms a user ends up with:

* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (one per config is fine:
  ``<src>/<config>/dataset_dict.json``);
* the hub repository's files (``huggingface-cli download --repo-type dataset ID --local-dir DIR``):
  ``data/<split>-00000-of-00002-<hash>.parquet``, ``<config>/<split>-….parquet``, or the parquet
  converter's ``<config>/<split>/0000.parquet``; ``.arrow`` files work alike.

Audio is never decoded by ``datasets`` (its Audio feature would need torchcodec and FFmpeg): decoding
is switched off, and each row's audio bytes are written once under ``--out/audio/`` and read by
soundfile, which also checks them. ``datasets``' own cache goes to ``--out/.hf_cache`` and is removed
afterwards, so nothing is written outside ``--out``.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from speechtl.data.corpora.common import audio_duration, files_fingerprint, safe_name
from speechtl.data.manifest import ManifestError, Utterance
from speechtl.io import atomic_write, progress

LOG = logging.getLogger("speechtl.data.hub")

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
EXTENSIONS = {"WAV": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3", "AIFF": "aiff"}
CACHE = ".hf_cache"


@dataclass(frozen=True)
class HubDataset:
    """A corpus as published on the Hub: where it lives, which columns it must have, how to get it."""

    name: str
    hub_id: str
    columns: tuple[str, ...]
    #: Told to the user when the source can't be read: what to download and where to point --src.
    download: str
    audio: str = "audio"


@dataclass
class Row:
    """One row of a dataset and where it came from (file or hub id, config, split, row number)."""

    data: dict[str, Any]
    config: str
    split: str
    where: str
    #: Position among all rows read, in a fixed order (files sorted): a stable id where a corpus has none.
    number: int = 0

    def audio_file(self, column: str, dest: Path, base: Path | None = None) -> tuple[Path, float]:
        """A readable audio file for this row and its duration: the source file, or the bytes written to ``dest``."""
        return audio_file(self.data.get(column), dest, self.where, base)


@dataclass
class _Part:
    config: str
    split: str
    where: str
    dataset: Any  # a datasets.IterableDataset


def is_hub_id(src: str) -> bool:
    return HUB_ID.fullmatch(src) is not None and not Path(src).exists()


def is_dataset_copy(path: Path) -> bool:
    """Does ``path`` hold a saved or downloaded Hugging Face dataset (rather than a corpus' own layout)?"""
    return path.is_dir() and any(next(path.rglob(pattern), None) for pattern in
                                 ("dataset_dict.json", "state.json", "*.parquet", "*.arrow"))


def source_identity(src: str) -> Any:
    """What the done-stamp remembers of the source: a hub id as is, a local copy by its files."""
    path = Path(src).expanduser()
    if not path.exists():
        return {"hub": src}
    files = [p for p in path.rglob("*") if p.is_file() and CACHE not in p.parts]
    return {"local": str(path.resolve()), "files": files_fingerprint(files)}


def iter_rows(spec: HubDataset, src: str, out: Path, configs: Sequence[str] | None = None,
              splits: Sequence[str] | None = None) -> Iterator[Row]:
    """Every row of the selected configs and splits, columns checked against ``spec`` on the first row."""
    cache = Path(out) / CACHE
    number = 0
    try:
        for part in _open(spec, src, cache, configs):
            if splits is not None and part.split not in splits:
                continue
            for row in _rows(spec, part):
                row.number, number = number, number + 1
                yield row
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def collect(spec: HubDataset, src: str, out: Path, make: Callable[[Row], Utterance | None],
            configs: Sequence[str] | None = None, splits: Sequence[str] | None = None) -> dict[str, list[Utterance]]:
    """Turn rows into utterances grouped by split; ``make`` builds one from a row (audio left empty) or skips it.

    Audio is written only for utterances with text: an empty transcript is dropped (and counted) by the
    filters anyway, so there is no point in keeping its audio.
    """
    sets: dict[str, list[Utterance]] = defaultdict(list)
    for row in iter_rows(spec, src, out, configs, splits):
        u = make(row)
        if u is None:
            continue
        if u.text.strip():
            dest = Path(out) / "audio" / spec.name / safe_name(row.config) / safe_name(row.split) / u.id
            path, u.duration = row.audio_file(spec.audio, dest)
            u.audio = str(path)
        sets[row.split].append(u)
    return dict(sets)


def _open(spec: HubDataset, src: str, cache: Path, configs: Sequence[str] | None) -> list[_Part]:
    """Local copies are read whole (their config is their folder); ``configs`` selects what to stream from the Hub."""
    path = Path(src).expanduser()
    if path.exists():
        return _local_parts(spec, path, cache)
    if is_hub_id(src):
        return [p for c in (configs or [None]) for p in _hub_parts(spec, src, c, cache)]
    raise ManifestError(f"--src {src}: no such folder, and not a hub id like {spec.hub_id}. {spec.download}")


def _no_decode(ds: Any) -> Any:
    """Switch off ``datasets``' audio decoding: rows then hold {'bytes', 'path'} and soundfile does the rest."""
    import datasets

    if isinstance(ds, datasets.Dataset):
        ds = ds.to_iterable_dataset()
    return ds.decode(False)


def _hub_parts(spec: HubDataset, hub_id: str, config: str | None, cache: Path) -> list[_Part]:
    import datasets

    try:
        dd = datasets.load_dataset(hub_id, name=config, streaming=True, cache_dir=str(cache))
    except (OSError, ValueError, RuntimeError) as e:  # offline, gated, script-based, unknown config
        what = f"{hub_id}" + (f" (config {config})" if config else "")
        raise ManifestError(f"can't stream {what} from the Hugging Face Hub: {str(e).splitlines()[0][:300]}\n"
                            f"  {spec.download}") from e
    return [_Part(config or "default", str(split), f"{hub_id}[{config or 'default'}/{split}]", _no_decode(ds))
            for split, ds in dd.items()]


def _local_parts(spec: HubDataset, root: Path, cache: Path) -> list[_Part]:
    def is_saved(d: Path) -> bool:
        return (d / "dataset_dict.json").is_file() or (d / "state.json").is_file()

    if is_saved(root):
        return _saved_parts(root, "default")
    saved = [d for d in sorted(root.iterdir()) if d.is_dir() and is_saved(d)]
    if saved:
        return [p for d in saved for p in _saved_parts(d, d.name)]
    files = sorted(p for ext in ("parquet", "arrow") for p in root.rglob(f"*.{ext}") if CACHE not in p.parts)
    if not files:
        raise ManifestError(f"{root}: no copy of {spec.hub_id} here: expected a save_to_disk folder "
                            f"(dataset_dict.json or state.json) or the repository's .parquet/.arrow files. "
                            f"{spec.download}")
    return [_file_part(root, f, cache) for f in files]


def _saved_parts(folder: Path, config: str) -> list[_Part]:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        return [_Part(config, split, f"{folder}[{split}]", _no_decode(ds)) for split, ds in loaded.items()]
    split = str(loaded.split) if loaded.split is not None else "train"
    return [_Part(config, split, f"{folder}[{split}]", _no_decode(loaded))]


def config_and_split(root: Path, file: Path) -> tuple[str, str]:
    """Read a data file's config and split from the hub's naming conventions.

    ``data/test-00000-of-00010-ab12.parquet`` -> (default, test); ``irish_male/train-00000-….parquet`` ->
    (irish_male, train); ``irish_male/train/0000.parquet`` (parquet converter) -> (irish_male, train).
    """
    dirs = list(file.relative_to(root).parts[:-1])
    if file.stem.isdigit() and dirs:
        split = dirs.pop()
    else:
        split = file.stem.split("-")[0].split(".")[0]
    dirs = [d for d in dirs if d != "data"]
    return (dirs[-1] if dirs else "default"), split


def _file_part(root: Path, file: Path, cache: Path) -> _Part:
    import datasets

    config, split = config_and_split(root, file)
    ds = datasets.load_dataset(file.suffix[1:], data_files=[str(file)], split="train", streaming=True,
                               cache_dir=str(cache))
    return _Part(config, split, str(file), _no_decode(ds))


def _rows(spec: HubDataset, part: _Part) -> Iterator[Row]:
    for i, data in enumerate(progress(part.dataset, desc=f"{spec.name} {part.config}/{part.split}", unit="row",
                                      leave=False)):
        where = f"{part.where} row {i}"
        if i == 0:
            missing = [c for c in spec.columns if c not in data]
            if missing:
                raise ManifestError(f"{where}: column(s) {missing} missing (columns: {sorted(data)}); is this "
                                    f"{spec.hub_id}? {spec.download}")
        yield Row(data, part.config, part.split, where)


def audio_file(audio: Any, dest: Path, where: str, base: Path | None = None) -> tuple[Path, float]:
    """Write a row's audio bytes to ``dest`` + the extension of their format (once), or use its file.

    soundfile reads the header first, so undecodable audio is an error naming the row, not a later crash.
    """
    data, path = (audio.get("bytes"), audio.get("path")) if isinstance(audio, dict) else (None, audio)
    if data:
        try:
            info = sf.info(io.BytesIO(data))
        except (RuntimeError, sf.LibsndfileError) as e:
            raise ManifestError(f"{where}: soundfile can't decode this row's audio ({e}); the copy may be "
                                "damaged: download it again") from e
        target = dest.with_name(f"{safe_name(dest.name)}.{EXTENSIONS.get(info.format, info.format.lower())}")
        if not target.is_file():
            with atomic_write(target, "wb") as f:
                f.write(data)
        return target, float(info.duration)
    if isinstance(path, str) and path:
        file = Path(path) if Path(path).is_absolute() or base is None else base / path
        if file.is_file():
            return file, audio_duration(file, where)
    raise ManifestError(f"{where}: the audio column holds neither bytes nor a readable file (path {path!r}); "
                        "the local copy is incomplete")
