"""Fabricated noise recordings and room impulse responses, for the ``noise`` and ``reverb`` augmentations.

Real ones (MUSAN's noise and music, the RIRS_NOISES set) are downloads; this writes stand-ins offline so the
recipes and tests can run the whole augmentation path here:

* ``noise.jsonl``: coloured noise (white, pink: 1/f, brown: 1/f², each 60 s) and a hum (50 Hz and harmonics
  under white noise), seeded;
* ``rirs.jsonl``: impulse responses with a direct path after 5 ms and an exponentially decaying random tail,
  reverberation times (T60) spread over 0.2-0.8 s.

They exercise the code, not the acoustics: a model that learns to ignore white noise has not learnt to ignore
a café. Point ``augment.noise.manifest`` / ``augment.reverb.manifest`` at real recordings for a real gain.

    speechtl prepare fabricated_noise --out exp/noise
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from speechtl.data.manifest import Utterance, read_manifest, write_manifest

RATE = 16000
NOISE_SECONDS = 60.0
T60S = (0.2, 0.35, 0.5, 0.65, 0.8)


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f² power) noise, or a mains hum, at an RMS of 0.1."""
    if kind == "hum":
        t = np.arange(n) / RATE
        x = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5)) + 0.1 * rng.standard_normal(n)
    else:
        power = {"white": 0, "pink": 1, "brown": 2}[kind]
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1]
        x = np.fft.irfft(spectrum / freqs ** (power / 2), n)
    return (0.1 * x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def impulse_response(t60: float, rng: np.random.Generator) -> np.ndarray:
    """A direct path after 5 ms, then a random tail decaying by 60 dB over ``t60`` seconds."""
    n = int(t60 * RATE)
    rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.2
    delay = int(0.005 * RATE)
    rir[:delay] = 0.0
    rir[delay] = 1.0
    return rir.astype(np.float32)


def prepare_fabricated_noise(out: str | Path, seed: int = 0) -> dict[str, Path]:
    out = Path(out)
    rng = np.random.default_rng(seed)
    sets: dict[str, list[Utterance]] = {"noise": [], "rirs": []}
    for kind in ("white", "pink", "brown", "hum"):
        path = out / "noise" / f"{kind}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), coloured_noise(kind, int(NOISE_SECONDS * RATE), rng), RATE)
        sets["noise"].append(Utterance(id=f"noise-{kind}", audio=str(path.resolve()), duration=NOISE_SECONDS,
                                       text="<noise>", speaker=kind, accent="none"))
    for i, t60 in enumerate(T60S):
        path = out / "rirs" / f"rir{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), impulse_response(t60, rng), RATE)
        sets["rirs"].append(Utterance(id=f"rir-{i}", audio=str(path.resolve()), duration=t60, text="<rir>",
                                      speaker="room", accent="none", meta={"t60": t60}))
    manifests = {}
    for name, utts in sets.items():
        manifests[name] = out / f"{name}.jsonl"
        write_manifest(manifests[name], utts, relative_to=out)  # the folder can move
        read_manifest(manifests[name])  # what was written must validate
    return manifests


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)


def from_args(args: argparse.Namespace) -> dict[str, Path]:
    return prepare_fabricated_noise(args.out, args.seed)
