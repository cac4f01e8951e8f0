"""The manifest: one JSON object a line, one utterance each; the contract between every stage.

Required fields: ``id``, ``audio``, ``duration``, ``text``, ``speaker``, ``accent``; optional
``offset`` (seconds into ``audio``) and ``lang``. A line with ``offset`` (even ``0``) is a segment:
``offset`` and ``duration`` together say which part of ``audio`` it is; without ``offset`` the
utterance is the whole file. Any other field (corpus metadata such as
``domain`` or ``country``) is kept in :attr:`Utterance.meta` and written back unchanged.
``audio`` may be relative: it is resolved against the manifest's own folder, so a corpus and its
manifest can move together.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechtl.errors import SpeechtlError
from speechtl.io import text_lines

REQUIRED = {"id": str, "audio": str, "duration": (int, float), "text": str, "speaker": str, "accent": str}
OPTIONAL = {"offset": (int, float), "lang": str}
MAX_ERRORS_SHOWN = 20


class ManifestError(SpeechtlError):
    """A manifest that can't be used; the message lists each bad line as ``file:line: field: problem``."""


@dataclass
class Utterance:
    """One utterance of a manifest (cf. Lhotse's SupervisionSegment, kept flat)."""

    id: str
    audio: str
    duration: float
    text: str
    speaker: str
    accent: str
    #: Seconds into ``audio`` where the segment starts; None: the utterance is the whole file.
    offset: float | None = None
    lang: str = "en"
    meta: dict[str, Any] = field(default_factory=dict)
    # Where this record came from, for error messages; never written out.
    source: str = field(default="", compare=False, repr=False)

    def audio_path(self, base: str | os.PathLike | None = None) -> Path:
        p = Path(self.audio)
        if not p.is_absolute() and base is not None:
            p = Path(base) / p
        return p

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "audio": self.audio, "duration": round(float(self.duration), 4),
                             "text": self.text, "speaker": self.speaker, "accent": self.accent}
        if self.offset is not None:
            d["offset"] = self.offset
        d["lang"] = self.lang
        d.update(self.meta)
        return d


def _check_record(obj: Any, where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: expected a JSON object, got {type(obj).__name__}"]
    errors = []
    for key, typ in REQUIRED.items():
        if key not in obj:
            errors.append(f"{where}: field '{key}' is missing")
            continue
        val = obj[key]
        if isinstance(val, bool) or not isinstance(val, typ):
            errors.append(f"{where}: field '{key}' must be {_typename(typ)}, got {type(val).__name__} {val!r:.40}")
    for key, typ in OPTIONAL.items():
        if key in obj and (isinstance(obj[key], bool) or not isinstance(obj[key], typ)):
            errors.append(f"{where}: field '{key}' must be {_typename(typ)}, got {type(obj[key]).__name__}")
    if errors:
        return errors
    for key in ("id", "audio", "speaker"):
        if not obj[key].strip():
            errors.append(f"{where}: field '{key}' is empty")
    if not obj["text"].strip():
        errors.append(f"{where}: field 'text' is empty (utterance '{obj['id']}'); drop the line or transcribe it")
    dur = float(obj["duration"])
    if not math.isfinite(dur) or dur <= 0:
        errors.append(f"{where}: field 'duration' must be a positive number of seconds, got {obj['duration']}")
    if "offset" in obj and (not math.isfinite(float(obj["offset"])) or obj["offset"] < 0):
        errors.append(f"{where}: field 'offset' must be >= 0, got {obj['offset']}")
    return errors


def _typename(typ: Any) -> str:
    return "a number" if typ == (int, float) else "a string"


def parse_manifest(path: str | os.PathLike, check_audio: bool = True) -> tuple[list[Utterance], list[str]]:
    """Read a manifest and return (utterances, errors) without raising, for validators and reports."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    utts: list[Utterance] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for lineno, bline in enumerate(text_lines(path), start=1):
        where = f"{path}:{lineno}"
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.append(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start}); re-encode the file as UTF-8")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{where}: not valid JSON ({e.msg} at column {e.colno})")
            continue
        errs = _check_record(obj, where)
        if errs:
            errors.extend(errs)
            continue
        if obj["id"] in seen:
            errors.append(f"{where}: field 'id': duplicate id '{obj['id']}' (first on line {seen[obj['id']]})")
            continue
        seen[obj["id"]] = lineno
        meta = {k: v for k, v in obj.items() if k not in REQUIRED and k not in OPTIONAL}
        offset = float(obj["offset"]) if "offset" in obj else None
        utt = Utterance(id=obj["id"], audio=obj["audio"], duration=float(obj["duration"]), text=obj["text"],
                        speaker=obj["speaker"], accent=obj["accent"], offset=offset, lang=obj.get("lang", "en"),
                        meta=meta, source=where)
        if check_audio:
            audio = utt.audio_path(path.resolve().parent)  # as read_manifest resolves it, symlinks too
            if not audio.is_file():
                errors.append(f"{where}: field 'audio': file not found: {audio}")
                continue
        utts.append(utt)
    if not utts and not errors:
        errors.append(f"{path}: manifest is empty")
    return utts, errors


def read_manifest(path: str | os.PathLike, check_audio: bool = True) -> list[Utterance]:
    """Read and validate a manifest; raise :class:`ManifestError` naming every bad line.

    Relative ``audio`` paths are made absolute here so later stages never need the manifest's path.
    """
    path = Path(path)
    utts, errors = parse_manifest(path, check_audio=check_audio)
    if errors:
        shown = "\n  ".join(errors[:MAX_ERRORS_SHOWN])
        more = f"\n  ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise ManifestError(f"{len(errors)} problem(s) in manifest {path}:\n  {shown}{more}")
    base = path.resolve().parent
    for u in utts:
        u.audio = str(u.audio_path(base))
    return utts


def write_manifest(path: str | os.PathLike, utts: Iterable[Utterance], relative_to: str | os.PathLike | None = None
                   ) -> None:
    """Write a manifest atomically; with ``relative_to`` audio paths are stored relative to it."""
    from speechtl.io import write_jsonl

    def row(u: Utterance) -> dict[str, Any]:
        d = u.to_dict()
        if relative_to is not None:
            d["audio"] = os.path.relpath(u.audio, relative_to)
        return d

    write_jsonl(path, (row(u) for u in utts))
