"""Fabricated evaluations for the report, score and compare tests: no model, real scoring code.

References come from a small vocabulary; hypotheses are the references with errors injected at a
chosen rate per speaker, then scored by speechtl's own ``score_hypotheses`` and written as an
evaluation dir exactly as ``speechtl eval`` lays it out.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from speechtl.data.manifest import Utterance
from speechtl.evaluate.evaldir import EvalDir, score_parallel
from speechtl.evaluate.stats import BootstrapConfig

WORDS = ("the cat sat on a mat dog ran in park big small red green house tree boat sails at dawn bus was late "
         "again she sells fish market bring me cup birds sing morning").split()


def make_utterances(speakers: dict[str, str], per_speaker: int = 6, seed: int = 0, prefix: str = "") -> list[Utterance]:
    """``per_speaker`` utterances for each speaker (name → accent), 4 to 10 words each."""
    rng = random.Random(seed)
    utts = []
    for spk, accent in speakers.items():
        for i in range(per_speaker):
            text = " ".join(rng.choices(WORDS, k=rng.randint(4, 10)))
            utts.append(Utterance(id=f"{prefix}{spk}-{i:03d}", audio=f"{spk}-{i}.wav", duration=1.0 + 0.1 * i,
                                  text=text, speaker=spk, accent=accent))
    return utts


def corrupt(text: str, rate: float, rng: random.Random) -> str:
    """Each word substituted with probability ``rate``, deleted with ``rate/3``; an insertion with ``rate/4``."""
    out = []
    for w in text.split():
        x = rng.random()
        if x < rate:
            out.append(rng.choice([v for v in WORDS if v != w]))
        elif x < rate * 4 / 3:
            continue
        else:
            out.append(w)
        if rng.random() < rate / 4:
            out.append(rng.choice(WORDS))
    return " ".join(out)


def hypotheses(utts: list[Utterance], rates: dict[str, float], seed: int = 1) -> dict[str, str]:
    """Hypotheses with an error rate per speaker (missing speakers: 0, i.e. perfect)."""
    rng = random.Random(seed)
    return {u.id: corrupt(u.text, rates.get(u.speaker, 0.0), rng) for u in utts}


def write_eval(out_dir: Path, utts: list[Utterance], hyps: dict[str, str], model: str = "fabricated") -> Path:
    """An evaluation dir (hyp.jsonl, scores.json, per_utt, ...) as eval writes it."""
    EvalDir(out_dir).write(score_parallel(utts, hyps), {"model": model, "manifest": "fabricated.jsonl"},
                           BootstrapConfig(n_boot=50))
    return out_dir


def write_manifest(path: Path, utts: list[Utterance]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(u.to_dict()) + "\n" for u in utts), encoding="utf-8")
    return path


def write_experiment(exp: Path, sets: dict[str, tuple[list[Utterance], dict[str, str], dict[str, str]]],
                     method: str = "freeze", trainable: int = 1000, total: int = 10000,
                     base_model: str = "base-model") -> Path:
    """EXP/eval/{before,after}/<set>/ and EXP/train/{summary.json,config.yaml,env.json}.

    ``sets`` maps a set name to (utterances, hypotheses before, hypotheses after).
    """
    for name, (utts, before, after) in sets.items():
        write_eval(exp / "eval" / "before" / name, utts, before, base_model)
        write_eval(exp / "eval" / "after" / name, utts, after, str(exp / "train"))
    train = exp / "train"
    train.mkdir(parents=True, exist_ok=True)
    (train / "summary.json").write_text(json.dumps({
        "steps": 10, "best_dev_wer": 0.2, "best_step": 10, "train_utterances": 40, "train_hours": 0.05,
        "train_speakers": 4, "utterances_per_step": 4, "method": method, "freeze": ["decoder"],
        "trainable_parameters": trainable, "total_parameters": total, "base_model": base_model}))
    (train / "config.yaml").write_text(f"method: {method}\nlearning_rate: 0.001\nseed: 42\n")
    (train / "env.json").write_text(json.dumps({"python": "3.11", "platform": "test",
                                                "packages": {"torch": "x"}, "speechtl_git": "abc"}))
    return exp
