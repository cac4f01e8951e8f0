"""A synthetic accented corpus spoken by espeak-ng, for offline recipes and tests.

A YAML spec names the speakers (espeak voice + variant, speed, pitch, accent label), the sentence
file, how its sentences are cut into disjoint pools, and which speakers read which pool in each
output set. Speakers are assigned to sets by the spec, so splits are speaker-disjoint when the
spec says so (it is checked), and sentence-disjoint by construction (pools don't overlap).

Example spec::

    sentences: ../../data_manifests/synthetic_caribbean/sentences.txt   # relative to the spec
    seed: 1
    pools: {train: 420, dev: 40, test: 140}
    speakers:
      car_m3: {voice: en-029+m3, speed: 160, pitch: 45, accent: en-029}
      us_f2:  {voice: en-us+f2, speed: 170, pitch: 60, accent: en-us}
    sets:
      train:   {pool: train, speakers: [car_m3]}
      test_us: {pool: test, speakers: [us_f2], every_speaker: false}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import yaml

from speechtl.data.manifest import ManifestError, Utterance, write_manifest
from speechtl.io import progress, write_json

LOG = logging.getLogger("speechtl.data.espeak")


@dataclass
class Speaker:
    name: str
    voice: str
    accent: str
    speed: int = 160
    pitch: int = 50


@dataclass
class SetSpec:
    pool: str
    speakers: list[str]
    #: True: every speaker reads every sentence of the pool; False: sentences are dealt out in turn.
    every_speaker: bool = False


@dataclass
class EspeakSpec:
    sentences: Path
    pools: dict[str, int]
    speakers: dict[str, Speaker]
    sets: dict[str, SetSpec]
    seed: int = 1
    lang: str = "en"
    extra: dict[str, Any] = field(default_factory=dict)


def load_spec(path: str | os.PathLike) -> EspeakSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: can't read espeak spec: {e}") from e
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: espeak spec must be a mapping")
    known = {"sentences", "pools", "speakers", "sets", "seed", "lang"}
    unknown = set(raw) - known
    if unknown:
        raise ManifestError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    for key in ("sentences", "pools", "speakers", "sets"):
        if key not in raw:
            raise ManifestError(f"{path}: missing key '{key}'")
    try:
        speakers = {n: Speaker(name=n, **s) for n, s in raw["speakers"].items()}
        sets = {n: SetSpec(**s) for n, s in raw["sets"].items()}
    except TypeError as e:
        raise ManifestError(f"{path}: bad speaker or set entry: {e}") from e
    spec = EspeakSpec(sentences=(path.parent / raw["sentences"]).resolve(), pools=dict(raw["pools"]),
                      speakers=speakers, sets=sets, seed=int(raw.get("seed", 1)), lang=raw.get("lang", "en"))
    for name, s in sets.items():
        if s.pool not in spec.pools:
            raise ManifestError(f"{path}: set '{name}' uses unknown pool '{s.pool}'")
        missing = [x for x in s.speakers if x not in speakers]
        if missing:
            raise ManifestError(f"{path}: set '{name}' names unknown speaker(s) {missing}")
    return spec


def read_sentences(path: Path) -> list[str]:
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError as e:
        raise ManifestError(f"{path}: sentence file not found") from e
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not valid UTF-8 ({e.reason})") from e
    sentences = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise ManifestError(f"{path}:{i}: empty sentence")
        sentences.append(line.strip())
    dup = len(sentences) - len({s.lower() for s in sentences})
    if dup:
        raise ManifestError(f"{path}: {dup} duplicate sentence(s); pools would not be disjoint")
    return sentences


def plan(spec: EspeakSpec) -> dict[str, list[tuple[str, Speaker, str]]]:
    """Decide (utterance id, speaker, sentence) for every set; a pure function of the spec."""
    sentences = read_sentences(spec.sentences)
    need = sum(spec.pools.values())
    if need > len(sentences):
        raise ManifestError(f"{spec.sentences}: pools need {need} sentences, the file has {len(sentences)}")
    rng = random.Random(spec.seed)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    pools, start = {}, 0
    for name, n in spec.pools.items():
        pools[name] = order[start:start + n]
        start += n
    out: dict[str, list[tuple[str, Speaker, str]]] = {}
    for set_name, s in spec.sets.items():
        spk = [spec.speakers[x] for x in s.speakers]
        rows = []
        for k, sid in enumerate(pools[s.pool]):
            readers = spk if s.every_speaker else [spk[k % len(spk)]]
            rows.extend((f"{r.name}-s{sid:04d}", r, sentences[sid]) for r in readers)
        out[set_name] = rows
    return out


def _speaker_overlaps(planned: dict[str, list[tuple[str, Speaker, str]]]) -> list[str]:
    names = {k: {r.name for _, r, _ in v} for k, v in planned.items()}
    keys = sorted(names)
    return [f"{a} & {b}: {sorted(names[a] & names[b])}" for i, a in enumerate(keys) for b in keys[i + 1:]
            if names[a] & names[b]]


def synthesize(text: str, speaker: Speaker, path: Path, espeak: str) -> None:
    """Speak ``text`` into ``path`` atomically (a killed run never leaves a half-written wav)."""
    tmp = path.with_name(f".{path.name}.tmp")
    cmd = [espeak, "-v", speaker.voice, "-s", str(speaker.speed), "-p", str(speaker.pitch), "-w", str(tmp), "--", text]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not tmp.is_file() or tmp.stat().st_size <= 44:
        tmp.unlink(missing_ok=True)
        raise ManifestError(f"espeak-ng failed for speaker '{speaker.name}' (voice {speaker.voice}): "
                            f"{res.stderr.strip() or 'no audio'}; check the voice in the spec (espeak-ng --voices "
                            "lists them)")
    os.replace(tmp, path)


def find_espeak() -> str:
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed: apt-get install espeak-ng (Debian/Ubuntu) or "
                           "brew install espeak-ng (macOS)")
    return exe


def prepare_espeak(spec_path: str | os.PathLike, out_dir: str | os.PathLike, jobs: int = 2) -> dict[str, Path]:
    """Synthesise every set of the spec into ``out_dir/audio`` and write ``out_dir/<set>.jsonl``.

    Re-running with the same spec is a no-op; an interrupted run only synthesises what is missing.
    """
    spec = load_spec(spec_path)
    out = Path(out_dir)
    planned = plan(spec)
    overlaps = _speaker_overlaps(planned)
    if overlaps:
        raise ManifestError(f"{spec_path}: sets share speakers, splits would not be speaker-disjoint: {overlaps}")
    digest = hashlib.sha256(json.dumps({k: [(i, r.voice, r.speed, r.pitch, t) for i, r, t in v]
                                        for k, v in planned.items()}, sort_keys=True).encode()).hexdigest()
    manifests = {name: out / f"{name}.jsonl" for name in planned}
    stamp = out / ".espeak_done.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("digest") == digest and all(
            m.is_file() for m in manifests.values()):
        LOG.info("%s: synthetic corpus already prepared for this spec; nothing to do", out)
        return manifests
    espeak = find_espeak()
    jobs_list = [(uid, spk, text, out / "audio" / spk.name / f"{uid}.wav")
                 for rows in planned.values() for uid, spk, text in rows]
    for _, spk, _, _ in jobs_list:
        (out / "audio" / spk.name).mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs_list if not j[3].is_file()]
    LOG.info("synthesising %d of %d utterances with %s", len(todo), len(jobs_list), espeak)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(progress(pool.map(lambda j: synthesize(j[2], j[1], j[3], espeak), todo), total=len(todo),
                      desc="espeak", unit="utt", leave=False))
    for name, rows in planned.items():
        utts = []
        for uid, spk, text in rows:
            wav = out / "audio" / spk.name / f"{uid}.wav"
            utts.append(Utterance(id=uid, audio=str(wav), duration=sf.info(str(wav)).duration, text=text,
                                  speaker=spk.name, accent=spk.accent, lang=spec.lang,
                                  meta={"voice": spk.voice, "speed": spk.speed, "pitch": spk.pitch}))
        write_manifest(manifests[name], utts, relative_to=out)
        LOG.info("%s: %d utterances, %d speakers, %.1f min", manifests[name], len(utts),
                 len({u.speaker for u in utts}), sum(u.duration for u in utts) / 60)
    write_json(stamp, {"digest": digest, "sets": {k: len(v) for k, v in planned.items()}})
    return manifests
