"""What every ``prepare_<corpus>()`` shares: options, the done-stamp, filtering, and writing the results.

A corpus module only knows its own layout: it turns the source into :class:`Utterance` records and
says which official split each came from. Everything after that (empty-text and duration filters,
speaker-disjoint splits, validation, the summary, the stamp that makes a re-run a no-op) lives here,
so every corpus behaves the same way and writes nothing outside ``out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import soundfile as sf

from speechtl.data.manifest import ManifestError, Utterance, read_manifest, write_manifest
from speechtl.data.splits import (
    DEFAULT_FRACTIONS,
    FilterReport,
    check_speaker_disjoint,
    filter_utterances,
    parse_fractions,
    write_summary,
)
from speechtl.errors import UsageError
from speechtl.io import write_json

LOG = logging.getLogger("speechtl.data.corpora")

#: Bump when a corpus module changes what it writes, so old outputs are prepared again.
FORMAT_VERSION = 1
STAMP = ".prepared"


@dataclass
class PrepareOptions:
    """Choices shared by every corpus: how to split, what to filter out, how to name the outputs."""

    seed: int = 1
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    min_duration: float = 0.0
    max_duration: float | None = 30.0
    #: Appended to every set name (``test`` -> ``test_svarah``), with the stamp and summary kept apart, so a
    #: second corpus can be prepared into the same --out (a recipe's extra test set).
    suffix: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PrepareOptions:
        try:
            fractions = parse_fractions(args.fractions)
        except ValueError as e:
            raise UsageError(f"--fractions: {e}") from e
        max_duration = args.max_duration if args.max_duration and args.max_duration > 0 else None
        if args.suffix and safe_name(args.suffix) != args.suffix:
            raise UsageError(f"--suffix '{args.suffix}' may hold only letters, digits, '.', '_' and '-'")
        return cls(seed=args.seed, fractions=fractions, min_duration=args.min_duration, max_duration=max_duration,
                   suffix=args.suffix)

    def train_dev(self) -> dict[str, float]:
        """The train and dev shares alone, rescaled to sum to 1: for corpora whose test split is official."""
        share = self.fractions["train"] + self.fractions["dev"]
        if share <= 0:
            raise ManifestError("--fractions: train and dev can't both be 0 when the test split is official")
        return {"train": self.fractions["train"] / share, "dev": self.fractions["dev"] / share}


def add_common_arguments(p: argparse.ArgumentParser, src_default: str | None, src_help: str) -> None:
    """--src and the options every corpus shares (split, filters, output names)."""
    p.add_argument("--src", required=src_default is None, default=src_default, help=src_help)
    p.add_argument("--seed", type=int, default=1, help="seed of the speaker-disjoint split")
    p.add_argument("--fractions", default="0.8,0.1,0.1", metavar="TRAIN,DEV,TEST",
                   help="share of each accent's hours per split, for sets speechtl carves itself")
    p.add_argument("--min-duration", type=float, default=0.0, help="drop (and count) shorter utterances, seconds")
    p.add_argument("--max-duration", type=float, default=30.0,
                   help="drop (and count) longer utterances, seconds (0: keep all; Whisper sees 30 s at most)")
    p.add_argument("--suffix", default="", help="write <set>_SUFFIX.jsonl (e.g. test_svarah.jsonl) with its own "
                   "stamp and summary, so a second corpus can share --out")


def split_list(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; ``None`` or empty -> ``None`` (no filter)."""
    items = [s.strip() for s in (text or "").split(",") if s.strip()]
    return items or None


def lowered(items: list[str] | None) -> set[str] | None:
    """Labels to match case-insensitively; ``None`` (no filter) stays ``None``."""
    return {x.strip().lower() for x in items} if items else None


def safe_name(text: str) -> str:
    """A string usable as a file name and an utterance id on every platform."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def audio_duration(path: Path, where: str) -> float:
    """Duration from the file header (soundfile), with an error that names the file and the utterance."""
    try:
        return float(sf.info(str(path)).duration)
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise ManifestError(f"{where}: can't read audio {path}: {e}; re-download or remove the file") from e


def files_fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of each file: a cheap way to notice that a local source has changed."""
    out = []
    for p in sorted(paths):
        st = p.stat()
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return out


@dataclass
class Job:
    """One ``prepare`` run: its inputs (hashed into the stamp) and its output folder."""

    corpus: str
    out: Path
    params: dict[str, Any]
    source: Any  # anything JSON-able that changes when the source data changes
    opts: PrepareOptions = field(default_factory=PrepareOptions)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.params = {**self.params, **asdict(self.opts)}
        blob = json.dumps({"corpus": self.corpus, "version": FORMAT_VERSION, "params": self.params,
                           "source": self.source}, sort_keys=True, default=str)
        self.digest = hashlib.sha256(blob.encode()).hexdigest()

    def named(self, stem: str, ext: str = "") -> Path:
        """``out/<stem>[_<suffix>]<ext>``: where this run's manifest, summary or stamp goes."""
        return self.out / (f"{stem}_{self.opts.suffix}{ext}" if self.opts.suffix else f"{stem}{ext}")

    def _stamp(self) -> dict[str, Any]:
        try:
            return json.loads(self.named(STAMP, ".json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def done(self) -> dict[str, Path] | None:
        """The manifests of an earlier run with the same inputs, or None when there is work to do."""
        data = self._stamp()
        manifests = {name: self.out / f"{name}.jsonl" for name in data.get("sets", [])}
        if data.get("digest") != self.digest or not manifests or not all(m.is_file() for m in manifests.values()):
            return None
        LOG.info("%s: %s already prepared with these options; nothing to do", self.out, self.corpus)
        return manifests

    def finish(self, sets: Mapping[str, list[Utterance]], report: FilterReport, disjoint: Iterable[str] | None = None,
               notes: Mapping[str, Any] | None = None,
               if_empty: str = "too few speakers or prompts for --fractions, or a selection that matches too "
                               "little; widen it or change --fractions") -> dict[str, Path]:
        """Validate, write ``<set>.jsonl`` for each non-empty set, the summary, and last the stamp.

        ``disjoint`` names the sets that must not share speakers and must not be empty (default: all of
        them); another set that comes out empty (an optional extra) is skipped with a warning.
        """
        required = list(disjoint) if disjoint is not None else list(sets)
        empty = [name for name, utts in sets.items() if not utts]
        if any(name in required for name in empty):
            raise ManifestError(f"{self.out}: set(s) {[n for n in empty if n in required]} of {self.corpus} came out "
                                f"empty (sizes: { {n: len(u) for n, u in sets.items()} }; filters dropped "
                                f"{report.dropped or 'nothing'}): {if_empty}")
        for name in empty:
            LOG.warning("%s: set '%s' is empty; no manifest written for it", self.out, name)
        final = {self.named(name).name: utts for name, utts in sets.items() if utts}
        required = [self.named(name).name for name in required]
        check_speaker_disjoint({n: final[n] for n in required}, where=f"{self.out} ({self.corpus})")
        _unique_ids(final, self.out)
        manifests = {}
        for name, utts in final.items():
            manifests[name] = path = self.out / f"{name}.jsonl"
            write_manifest(path, [replace(u, audio=relpath_or_abs(Path(u.audio), self.out)) for u in utts])
            read_manifest(path)  # what we wrote must pass the same validation every stage applies
            LOG.info("%s: %d utterances, %d speakers, %.2f h", path, len(utts), len({u.speaker for u in utts}),
                     sum(u.duration for u in utts) / 3600)
        write_summary(self.named("summary"), final, {"corpus": self.corpus, "params": self.params,
                                                     "filtered": asdict(report), "speaker_disjoint": required,
                                                     **(notes or {})})
        for stale in set(self._stamp().get("sets", [])) - set(manifests):  # an earlier run's set this one lacks
            (self.out / f"{stale}.jsonl").unlink(missing_ok=True)
            LOG.warning("%s: removed %s.jsonl, which these options no longer produce", self.out, stale)
        write_json(self.named(STAMP, ".json"), {"digest": self.digest, "corpus": self.corpus, "sets": list(manifests)})
        return manifests


def _unique_ids(sets: Mapping[str, list[Utterance]], out: Path) -> None:
    seen: dict[str, str] = {}
    for name, utts in sets.items():
        for u in utts:
            if u.id in seen:
                raise ManifestError(f"{out}: utterance id '{u.id}' occurs twice ({seen[u.id]} and {name}); "
                                    "the source has duplicate rows: remove one")
            seen[u.id] = name


def run_filters(official: Mapping[str, list[Utterance]], opts: PrepareOptions
                ) -> tuple[dict[str, list[Utterance]], FilterReport]:
    """Apply :func:`filter_utterances` to each official split, counting into one report."""
    report = FilterReport()
    kept = {}
    for name, utts in official.items():
        kept[name], _ = filter_utterances(utts, opts.min_duration, opts.max_duration, report, what=name)
    return kept, report


def relpath_or_abs(path: Path, out: Path) -> str:
    """Audio inside ``out`` is stored relative (the folder can move); a source corpus stays absolute."""
    try:
        return os.path.relpath(path, out) if path.resolve().is_relative_to(out.resolve()) else str(path.resolve())
    except ValueError:
        return str(path.resolve())

