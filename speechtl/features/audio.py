"""Decode audio with soundfile, downmix to mono and resample with soxr to the model's rate.

Audio is only ever read: nothing here writes next to a source corpus.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

from speechtl.data.manifest import Utterance
from speechtl.errors import SpeechtlError


class AudioError(SpeechtlError):
    """Audio that can't be used; the message names the file (and the manifest line when known)."""


def load_audio(path: str | os.PathLike, sampling_rate: int, offset: float = 0.0, duration: float | None = None,
               where: str = "") -> np.ndarray:
    """Return float32 mono samples at ``sampling_rate``.

    ``where`` (``manifest:line``) is prefixed to errors, so a bad file deep in a corpus is found at once.
    """
    prefix = f"{where}: " if where else ""
    try:
        info = sf.info(str(path))
        start = int(round(offset * info.samplerate))
        frames = -1 if duration is None else int(round(duration * info.samplerate))
        data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except FileNotFoundError as e:
        raise AudioError(f"{prefix}audio file not found: {path}") from e
    except (RuntimeError, sf.LibsndfileError, OSError) as e:
        raise AudioError(f"{prefix}can't decode audio file {path}: {e}") from e
    if data.size == 0:
        raise AudioError(f"{prefix}audio file {path} is empty (no samples"
                         f"{f' after offset {offset:.2f}s' if offset else ''})")
    if not np.isfinite(data).all():
        raise AudioError(f"{prefix}audio file {path} contains NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != sampling_rate:
        mono = soxr.resample(mono, sr, sampling_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_utterance(utt: Utterance, sampling_rate: int) -> np.ndarray:
    """The samples of one manifest utterance: the whole file, or its ``offset``/``duration`` segment.

    A segment is read as offset and duration together, whatever the offset: a segment starting at 0 s
    is still only ``duration`` seconds of its recording. Errors name the manifest line the utterance
    came from.
    """
    if utt.offset is None:
        return load_audio(utt.audio, sampling_rate, where=utt.source)
    return load_audio(utt.audio, sampling_rate, utt.offset, utt.duration, where=utt.source)
