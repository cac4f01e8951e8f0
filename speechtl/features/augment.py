"""On-the-fly augmentation of training audio: speed, reverberation, additive noise, volume.

An accent corpus is a few hours; every toolkit it is compared with stretches it this way (Kaldi's
3-way speed perturbation, ESPnet/NeMo noise and reverberation). SpecAugment is not here: it masks
the model's features inside the model and is set in ``model_settings``.

Each augmentation is one small, reviewable function over numpy arrays:

* **speed** (Kaldi's ``sox speed``): the samples are read as if recorded at ``factor * rate`` and
  resampled (soxr, the resampler :func:`~speechtl.features.audio.load_audio` already uses) back to
  ``rate``, so tempo and pitch move together; one factor drawn from a set (0.9/1.0/1.1 by default).
* **reverb**: convolution (FFT) with a room impulse response from a manifest, shifted by the
  response's direct-path delay so words stay where they were, and rescaled to the input's power
  (Kaldi's ``wav-reverberate --shift-output --normalize-output``).
* **noise**: a random segment of a recording from a noise manifest, scaled so the speech-to-noise
  power ratio is an SNR drawn from a range; only that segment is read from disk.
* **volume**: a gain in dB drawn from a range. No clipping: the pipeline is float all the way.

Why not ``audiomentations`` (or Lhotse's transforms)? Checked against its source (0.43):
its transforms draw from Python's global ``random``/``np.random``, so an utterance's audio depends on
what the worker drew before, not on (seed, epoch, utterance), and a resumed run would hear other
audio; seeding the globals per call would disturb everything else in the worker. Its noise and
impulse-response sources are folders of files loaded whole (an LRU of two files), where we need
speechtl manifests (segments with offsets) and want to read only the seconds we mix in; its
speed-with-pitch transform draws a rate from a continuous range rather than Kaldi's factor set. What
it would save is ten lines of arithmetic each, against a new dependency. Lhotse's transforms act on
its own ``Cut`` objects and would bring its whole data model for four operations.

Determinism: every random choice comes from a generator seeded by (seed, epoch, utterance id, which
augmentation), so the augmented audio is a pure function of those: a killed and resumed run hears
exactly what it would have heard, in any data-loader worker, and switching one augmentation on or
off leaves the draws of the others unchanged.

Data contract: nothing here writes anywhere; the trainer applies an :class:`Augmenter` to training
audio only, never to dev or test audio.

Example::

    >>> import numpy as np
    >>> cfg = AugmentConfig.from_dict({"speed": {}, "volume": {"gain_db": [-3, 3]}})
    >>> aug = Augmenter(cfg, seed=42, sampling_rate=16000)
    >>> audio = np.zeros(16000, dtype=np.float32)
    >>> bool((aug(audio, "utt1", epoch=0) == aug(audio, "utt1", epoch=0)).all())
    True
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from speechtl.data.manifest import ManifestError, Utterance, read_manifest
from speechtl.errors import UsageError
from speechtl.features.audio import SPEED_PERTURB, load_audio, load_utterance, speed_perturb

#: Speed factors a block may ask for; sox would take more, but beyond these speech stops being speech.
SPEED_RANGE = (0.5, 2.0)
#: Impulse responses kept decoded per process (each about a second of samples).
RIR_CACHE_SIZE = 256


@dataclass
class SpeedPerturb:
    """Kaldi-style speed perturbation: resampling, so pitch moves with tempo."""

    prob: float = field(default=1.0, metadata={"help": "chance that an utterance is perturbed at all"})
    factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1], metadata={
        "help": "speed factors, one drawn uniformly; 1.1 makes audio 1/1.1 as long and 1.1x higher"})


@dataclass
class VolumePerturb:
    prob: float = 1.0
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0], metadata={
        "help": "[low, high] gain in dB, drawn uniformly"})


@dataclass
class NoiseAugment:
    manifest: str = field(default="", metadata={
        "help": "speechtl manifest of noise recordings (e.g. MUSAN noise/music); relative to the working dir"})
    prob: float = 0.5
    snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0], metadata={
        "help": "[low, high] speech-to-noise power ratio in dB, drawn uniformly"})


@dataclass
class ReverbAugment:
    manifest: str = field(default="", metadata={
        "help": "speechtl manifest of room impulse responses (e.g. RIRS_NOISES); relative to the working dir"})
    prob: float = 0.5


#: The blocks of an ``augment:`` mapping, in the order they are applied to audio.
BLOCKS: dict[str, type] = {"speed": SpeedPerturb, "reverb": ReverbAugment, "noise": NoiseAugment,
                           "volume": VolumePerturb}
_RANGES = ("gain_db", "snr_db")


@dataclass
class AugmentConfig:
    """The ``augment:`` block of a training config; a block left out is off.

    ``speed: {}`` alone is Kaldi's 3-way speed perturbation; each block's keys default as in its class.
    """

    speed: SpeedPerturb | None = None
    reverb: ReverbAugment | None = None
    noise: NoiseAugment | None = None
    volume: VolumePerturb | None = None

    @property
    def enabled(self) -> bool:
        return any(getattr(self, name) is not None for name in BLOCKS)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every block that is on, with every key resolved (what the experiment dir records)."""
        out: dict[str, dict[str, Any]] = {}
        for name in BLOCKS:
            block = getattr(self, name)
            if block is not None:
                out[name] = {f.name: getattr(block, f.name) for f in fields(block)}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "config", lines: dict[str, int] | None = None,
                  prefix: str = "augment") -> AugmentConfig:
        """Check an ``augment:`` mapping and fill in defaults.

        ``lines`` maps dotted key paths from the YAML root (``augment``, ``augment.speed.prob``) to
        line numbers, as :func:`yaml_key_lines` makes them; a key without its own line is named by its
        nearest parent's. Unknown keys, wrong types and bad ranges raise ``ConfigError`` naming
        ``where:line`` and the key.
        """
        # Imported here, not at the top: adapt.config imports this module to validate its augment field.
        from speechtl.adapt.config import ConfigError

        def at(path: str) -> str:
            while path:
                if lines and path in lines:
                    return f"{where}:{lines[path]}"
                path = path.rpartition(".")[0]
            return where

        def fail(path: str, msg: str) -> ConfigError:
            return ConfigError(f"{at(path)}: '{path}' {msg}")

        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise fail(prefix, f"must be a mapping of augmentations ({', '.join(BLOCKS)}), "
                               f"got {type(data).__name__} {data!r}")
        built: dict[str, Any] = {}
        for name, body in data.items():
            path = f"{prefix}.{name}"
            if name not in BLOCKS:
                raise fail(path, f"is not an augmentation (known: {', '.join(BLOCKS)})")
            if not isinstance(body, dict):
                raise fail(path, f"must be a mapping of settings (write `{name}: {{}}` for the defaults), "
                                 f"got {type(body).__name__} {body!r}")
            kind = BLOCKS[name]
            known = [f.name for f in fields(kind)]
            values: dict[str, Any] = {}
            for key, value in body.items():
                kpath = f"{path}.{key}"
                if key not in known:
                    raise fail(kpath, f"is not a setting of {name} (known: {', '.join(known)})")
                values[key] = _check_value(key, value, lambda msg, p=kpath: fail(p, msg))
            if "manifest" in known and not values.get("manifest"):
                raise fail(f"{path}.manifest", f"is required: a manifest of {name} recordings")
            if "manifest" in values and not Path(values["manifest"]).is_file():
                raise fail(f"{path}.manifest", f"names no file: {values['manifest']} (relative paths are read "
                                               f"from the working dir, {os.getcwd()})")
            built[name] = kind(**values)
        return cls(**built)


def _check_value(key: str, value: Any, fail) -> Any:
    """One setting, type and range checked; ``fail(msg)`` makes the error that names it."""

    def number(v: Any) -> float:
        if isinstance(v, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise fail(f"must be a number, got {type(v).__name__} {v!r}")
        return float(v)

    if key == "manifest":
        if not isinstance(value, str):
            raise fail(f"must be a path, got {type(value).__name__} {value!r}")
        return value
    if key == "prob":
        p = number(value)
        if not 0.0 <= p <= 1.0:
            raise fail(f"must lie in [0, 1], got {p}")
        return p
    if not isinstance(value, list | tuple):
        raise fail(f"must be a list, got {type(value).__name__} {value!r}")
    items = [number(v) for v in value]
    if key == "factors":
        lo, hi = SPEED_RANGE
        if not items:
            raise fail("must list at least one speed factor")
        if any(not lo <= f <= hi for f in items):
            raise fail(f"must lie in [{lo}, {hi}], got {items}")
        return items
    if len(items) != 2:
        raise fail(f"must be [low, high], got {items}")
    if items[0] > items[1]:
        raise fail(f"must be [low, high] with low <= high, got {items}")
    return items


def yaml_key_lines(node: Any, prefix: str = "") -> dict[str, int]:
    """The 1-based line of every key of a composed YAML mapping (``yaml.compose``), nested ones as dotted
    paths (``augment.speed.prob``), so a config error can point at the line of a nested key."""
    import yaml

    out: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return out
    for key, value in node.value:
        path = f"{prefix}.{key.value}" if prefix else str(key.value)
        out[path] = key.start_mark.line + 1
        out.update(yaml_key_lines(value, path))
    return out


def speed_copies(utts: list[Utterance], factors: list[float]) -> list[Utterance]:
    """Kaldi's ``perturb_data_dir_speed_3way.sh`` as a manifest: one copy of each utterance per factor.

    A copy at factor ``f`` (other than 1) is a new utterance ``sp{f}-{id}`` of a new pseudo-speaker
    ``sp{f}-{speaker}``, ``1/f`` as long; it records ``speed_perturb: f`` (applied by
    :func:`~speechtl.features.audio.load_utterance` when the audio is read, so nothing is written next
    to the corpus) and ``source_speaker``, which keeps a speaker and its pseudo-speakers on one side of
    any speaker-level split (:func:`speechtl.data.splits.split_by_speaker`). Use it where a speaker
    count matters (a split, per-speaker statistics); for training alone, the ``augment: speed`` block
    perturbs on the fly without tripling the manifest.
    """
    out: list[Utterance] = []
    for f in factors:
        if not SPEED_RANGE[0] <= f <= SPEED_RANGE[1]:
            raise UsageError(f"speed factor {f} outside [{SPEED_RANGE[0]}, {SPEED_RANGE[1]}]")
    for u in utts:
        if u.meta.get(SPEED_PERTURB, 1.0) != 1.0:
            raise ManifestError(f"{u.source or u.id}: utterance {u.id} is already speed-perturbed")
        for f in factors:
            if f == 1.0:
                out.append(u)
                continue
            tag = f"sp{f:g}-"
            meta = {**u.meta, SPEED_PERTURB: f, "source_speaker": u.meta.get("source_speaker", u.speaker),
                    "source_id": u.id}
            out.append(replace(u, id=tag + u.id, speaker=tag + u.speaker, duration=u.duration / f, meta=meta))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The operations: pure functions of their inputs, usable on their own.

def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``audio`` plus ``noise`` (as long as ``audio``) scaled so that mean-square speech / noise is ``snr_db``.

    Silent noise (or silent speech) leaves the audio unchanged: no scale gives the asked ratio.
    """
    p_speech = float(np.mean(np.square(audio, dtype=np.float64)))
    p_noise = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_noise <= 0.0 or p_speech <= 0.0:
        return audio
    scale = math.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (audio + scale * noise).astype(np.float32, copy=False)


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with an impulse response, keep the input's length, timing (direct-path delay) and power."""
    if audio.size == 0 or rir.size == 0 or not np.any(rir):
        return audio
    delay = int(np.argmax(np.abs(rir)))
    n = audio.size + rir.size - 1
    nfft = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(audio, nfft) * np.fft.rfft(rir, nfft), nfft)[delay:delay + audio.size]
    p_in = float(np.mean(np.square(audio, dtype=np.float64)))
    p_out = float(np.mean(np.square(wet)))
    if p_out > 0.0:
        wet *= math.sqrt(p_in / p_out)
    return wet.astype(np.float32)


def gain(audio: np.ndarray, db: float) -> np.ndarray:
    return (audio * np.float32(10.0 ** (db / 20.0))).astype(np.float32, copy=False)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or tiled to ``n`` samples."""
    if x.size >= n:
        return x[:n]
    return np.tile(x, -(-n // x.size))[:n]


def _uid(utt_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(utt_id.encode("utf-8"), digest_size=8).digest(), "little")


class Augmenter:
    """Applies an :class:`AugmentConfig` to one utterance's samples; picklable, for data-loader workers.

    ``augmenter(audio, utt_id, epoch)`` is a pure function of (``seed``, ``epoch``, ``utt_id``) and
    the audio. ``max_seconds``: a slowing speed factor that would make the audio longer than this is
    not applied (Whisper reads at most 30 s; what lies beyond would lose its words, not its text).
    """

    def __init__(self, cfg: AugmentConfig, seed: int, sampling_rate: int, max_seconds: float | None = None):
        self.cfg, self.seed, self.sampling_rate, self.max_seconds = cfg, seed, sampling_rate, max_seconds
        self.noises: list[Utterance] = read_manifest(cfg.noise.manifest) if cfg.noise else []
        self.rirs: list[Utterance] = read_manifest(cfg.reverb.manifest) if cfg.reverb else []
        self._rir_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def rng(self, utt_id: str, epoch: int, which: str) -> np.random.Generator:
        """The generator of one augmentation of one utterance in one epoch."""
        return np.random.default_rng([self.seed % 2**64, epoch, _uid(utt_id), list(BLOCKS).index(which)])

    def __call__(self, audio: np.ndarray, utt_id: str, epoch: int) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size == 0:
            return audio
        cfg = self.cfg
        if cfg.speed is not None:
            rng = self.rng(utt_id, epoch, "speed")
            if rng.random() < cfg.speed.prob:
                factor = float(cfg.speed.factors[rng.integers(len(cfg.speed.factors))])
                too_long = self.max_seconds is not None and audio.size / factor > self.max_seconds * self.sampling_rate
                if not too_long:
                    audio = speed_perturb(audio, factor, self.sampling_rate)
        if cfg.reverb is not None:
            rng = self.rng(utt_id, epoch, "reverb")
            if rng.random() < cfg.reverb.prob:
                audio = reverberate(audio, self._rir(self.rirs[rng.integers(len(self.rirs))]))
        if cfg.noise is not None:
            rng = self.rng(utt_id, epoch, "noise")
            if rng.random() < cfg.noise.prob:
                noise = self._noise(self.noises[rng.integers(len(self.noises))], audio.size, rng)
                audio = add_noise(audio, noise, float(rng.uniform(*cfg.noise.snr_db)))
        if cfg.volume is not None:
            rng = self.rng(utt_id, epoch, "volume")
            if rng.random() < cfg.volume.prob:
                audio = gain(audio, float(rng.uniform(*cfg.volume.gain_db)))
        return audio

    def _noise(self, utt: Utterance, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of a noise recording: a random stretch of it, or all of it repeated if it is shorter."""
        need = n / self.sampling_rate
        if utt.duration > need:
            start = (utt.offset or 0.0) + float(rng.uniform(0.0, utt.duration - need))
            noise = load_audio(utt.audio, self.sampling_rate, start, need, where=utt.source)
        else:
            noise = load_utterance(utt, self.sampling_rate)
        return _fit(noise, n)

    def _rir(self, utt: Utterance) -> np.ndarray:
        rir = self._rir_cache.get(utt.id)
        if rir is None:
            rir = load_utterance(utt, self.sampling_rate)
            self._rir_cache[utt.id] = rir
            if len(self._rir_cache) > RIR_CACHE_SIZE:
                self._rir_cache.popitem(last=False)
        else:
            self._rir_cache.move_to_end(utt.id)
        return rir
