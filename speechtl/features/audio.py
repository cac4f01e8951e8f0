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

#: Manifest field of a speed-perturbed copy (:func:`speechtl.features.augment.speed_copies`): the factor.
SPEED_PERTURB = "speed_perturb"


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
    came from. A speed-perturbed copy (``speed_perturb: f`` in the manifest, its ``duration`` already
    ``1/f`` of the source segment's) is read and perturbed here, so every reader hears the same audio.
    """
    factor = float(utt.meta.get(SPEED_PERTURB, 1.0))
    if utt.offset is None:
        audio = load_audio(utt.audio, sampling_rate, where=utt.source)
    else:
        audio = load_audio(utt.audio, sampling_rate, utt.offset, utt.duration * factor, where=utt.source)
    return speed_perturb(audio, factor, sampling_rate)


def speed_perturb(audio: np.ndarray, factor: float, sampling_rate: int) -> np.ndarray:
    """``sox speed factor``: ``factor`` times faster and higher (the samples of a ``factor * rate`` recording)."""
    if factor == 1.0:
        return audio
    return soxr.resample(audio, sampling_rate * factor, sampling_rate, quality="HQ").astype(np.float32, copy=False)
