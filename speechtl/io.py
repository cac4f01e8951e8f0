"""Small file helpers shared by every room: atomic writes, JSON Lines, logging, run environment.

Every output speechtl writes goes through :func:`atomic_write` or :func:`atomic_dir`, so a run
killed half-way never leaves a truncated file that a later stage would mistake for a finished one.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

LOG = logging.getLogger("speechtl")
PROGRESS_LOG = logging.getLogger("speechtl.progress")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should read like any other file
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into place when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        for f in tmp.rglob("*"):  # safetensors writes 0600 files; a model dir is shared like any output
            if f.is_file() and not f.is_symlink():
                f.chmod(0o666 & ~_umask())
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def text_lines(path: str | os.PathLike) -> list[bytes]:
    """A text file's lines as editors on any system save them: a leading UTF-8 byte-order mark dropped,
    ``\n``, ``\r\n`` and ``\r`` line ends removed.

    The lines stay bytes, so that each reader can name the line of a byte that isn't UTF-8.
    """
    return Path(path).read_bytes().removeprefix(codecs.BOM_UTF8).splitlines()


class LogProgress:
    """The part of tqdm's interface speechtl uses, reporting as log lines: one each time another tenth of
    ``total`` is done (and at the end), or, with no total, at 10, 20, 50, 100, 200, 500… items.

    For output that is not a terminal, where tqdm's carriage-return redraws would fill a log file
    with hundreds of half-lines.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False) -> None:
        self.iterable = iterable
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.desc, self.unit, self.disable = desc, unit, disable
        self.n = self._start = initial
        self._started = time.monotonic()
        self._postfix = ""
        self._next = self._next_mark(initial)
        self._closed = False

    def _next_mark(self, n: int) -> int:
        """The count at which the next line is due."""
        if self.total:
            tenth = 10 * n // self.total + 1
            return -(-tenth * self.total // 10)  # the first count in the next tenth
        mark = 10
        while mark <= n:
            mark = mark * 5 // 2 if str(mark)[0] == "2" else mark * 2
        return mark

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in () if self.iterable is None else self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next:
            self._log()
            self._next = self._next_mark(self.n)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def close(self) -> None:
        if not self._closed and not self.total and self.n > self._start:
            self._log(final=True)  # the count reached, which no mark announced
        self._closed = True

    def _log(self, final: bool = False) -> None:
        if self.disable:
            return
        elapsed = time.monotonic() - self._started
        rate = (self.n - self._start) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit} ({100 * self.n // self.total}%)" if self.total
                 else f"{self.n} {self.unit}"]
        if rate:  # as tqdm says it: items a second, or seconds an item when slower than one a second
            parts.append(f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}")
        if final or (self.total and self.n >= self.total):
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total and rate:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        else:
            parts.append(f"{_duration(elapsed)} so far")
        if self._postfix:
            parts.append(self._postfix)
        PROGRESS_LOG.info("%s: %s", self.desc or "progress", ", ".join(parts))


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress(iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             **kwargs: Any) -> Any:
    """A progress bar for a long loop: tqdm when stderr is a terminal, else :class:`LogProgress` lines.

    Used as tqdm is: wrap an iterable, or pass ``total`` and call ``update``; ``initial``, ``disable``
    and ``set_postfix`` work in both. Other keyword arguments (``leave``…) go to tqdm only.
    """
    if _is_terminal(sys.stderr):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, **kwargs)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=kwargs.get("initial", 0),
                       disable=bool(kwargs.get("disable", False)))


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


@contextlib.contextmanager
def logging_to(log_file: str | os.PathLike) -> Iterator[None]:
    """Also append speechtl's log to ``log_file`` while inside, and only then: one command that makes several outputs
    (``speechtl eval`` of several sets) leaves each its own log."""
    root = logging.getLogger("speechtl")
    before = set(root.handlers)
    setup_logging(log_file, root.level or logging.INFO)
    try:
        yield
    finally:
        for h in set(root.handlers) - before:
            root.removeHandler(h)
            h.close()


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, append to ``log_file`` (the experiment's log).

    Under a distributed launcher (torchrun, accelerate launch) only rank 0 writes the file, and the
    other ranks log warnings only, so the log reads as one run.
    """
    root = logging.getLogger("speechtl")
    if int(os.environ.get("RANK", "0")) != 0:
        log_file, level = None, max(level, logging.WARNING)
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)
    if log_file is not None:
        log_file = Path(log_file).resolve()
        if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file
                   for h in root.handlers):
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(log_file, encoding="utf-8")
            fh.setFormatter(fmt)
            root.addHandler(fh)


def close_log_files(under: str | os.PathLike) -> None:
    """Stop logging into files under ``under``, before that dir is moved: an open handler would follow its
    file there, and :func:`setup_logging` would not open the new one (the path is the same)."""
    root, under = logging.getLogger("speechtl"), Path(under).resolve()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).is_relative_to(under):
            root.removeHandler(h)
            h.close()


def environment() -> dict[str, Any]:
    """Versions and host facts that decide a run's numbers, written beside every experiment."""
    import importlib.metadata as md

    pkgs = {}
    for name in ("speechtl", "torch", "transformers", "accelerate", "peft", "jiwer", "whisper-normalizer",
                 "soundfile", "soxr", "numpy", "ctranslate2"):
        try:
            pkgs[name] = md.version(name)
        except md.PackageNotFoundError:
            pkgs[name] = None
    git = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip() or None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": pkgs,
        "speechtl_git": git,
        "argv": sys.argv,
    }


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in chunks (model weights can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
