"""Collect a run's before/after evaluations and training summary, and write RESULTS.md / results.json.

Inputs are the files the other rooms wrote (``scores.json`` and ``hyp.jsonl`` per test set, the
training ``summary.json``, the recipe's ``timings.tsv``), so a report can always be rebuilt from
disk, and nothing in it is typed by hand.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechtl.io import atomic_write, environment, write_json

SCHEMA_VERSION = 1


@dataclass
class TestSetResult:
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    role: str = "test"
    examples: list[dict[str, str]] = field(default_factory=list)


def _load_scores(d: Path) -> dict[str, Any] | None:
    f = d / "scores.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _examples(before: Path, after: Path, n: int) -> list[dict[str, str]]:
    """The utterances whose WER changed most, with before and after hypotheses side by side."""
    b_file, a_file = before / "hyp.jsonl", after / "hyp.jsonl"
    if not (b_file.is_file() and a_file.is_file()):
        return []
    b = {r["id"]: r for r in map(json.loads, b_file.read_text(encoding="utf-8").splitlines())}
    a = {r["id"]: r for r in map(json.loads, a_file.read_text(encoding="utf-8").splitlines())}

    def errs(r: dict) -> int:
        return r["sub"] + r["del"] + r["ins"]

    common = sorted(set(a) & set(b), key=lambda i: (errs(a[i]) - errs(b[i]), i))
    return [{"id": i, "ref": b[i]["ref"], "before": b[i]["hyp"], "after": a[i]["hyp"]} for i in common[:n]]


def collect(before_dir: Path, after_dir: Path, roles: dict[str, str] | None = None, n_examples: int = 3
            ) -> list[TestSetResult]:
    names = sorted({p.name for d in (before_dir, after_dir) if d.is_dir() for p in d.iterdir()
                    if (p / "scores.json").is_file()})
    roles = roles or {}
    return [TestSetResult(name=n, before=_load_scores(before_dir / n), after=_load_scores(after_dir / n),
                          role=roles.get(n, "test"), examples=_examples(before_dir / n, after_dir / n, n_examples))
            for n in names]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _change(b: float | None, a: float | None) -> tuple[str, str]:
    if b is None or a is None:
        return "–", "–"
    rel = f"{100 * (a - b) / b:+.1f}%" if b else "–"
    return f"{100 * (a - b):+.2f}", rel


def _rate(scores: dict | None, metric: str, group: str | None = None, key: str | None = None) -> float | None:
    if scores is None:
        return None
    if group is None:
        return scores[metric]["rate"]
    entry = scores.get(f"per_{group}", {}).get(key)
    return entry[metric]["rate"] if entry else None


def before_after_table(results: list[TestSetResult]) -> list[str]:
    lines = ["| test set | role | utts | WER before | WER after | change (abs) | change (rel) | CER before "
             "| CER after |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        wb, wa = _rate(r.before, "wer"), _rate(r.after, "wer")
        d_abs, d_rel = _change(wb, wa)
        utts = (r.after or r.before or {}).get("utterances", 0)
        lines.append(f"| {r.name} | {r.role} | {utts} | {_pct(wb)} | {_pct(wa)} | {d_abs} | {d_rel} | "
                     f"{_pct(_rate(r.before, 'cer'))} | {_pct(_rate(r.after, 'cer'))} |")
    return lines


def group_table(results: list[TestSetResult], group: str) -> list[str]:
    lines = [f"| test set | {group} | WER before | WER after | change (rel) |", "|---|---|---:|---:|---:|"]
    for r in results:
        keys = sorted(set((r.before or {}).get(f"per_{group}", {})) | set((r.after or {}).get(f"per_{group}", {})))
        for k in keys:
            wb, wa = _rate(r.before, "wer", group, k), _rate(r.after, "wer", group, k)
            lines.append(f"| {r.name} | {k} | {_pct(wb)} | {_pct(wa)} | {_change(wb, wa)[1]} |")
    return lines


def read_timings(path: Path | None) -> dict[str, float]:
    """``stage<TAB>seconds`` lines; a stage run twice (resumed) counts both runs."""
    out: dict[str, float] = {}
    if path is None or not path.is_file():
        return out
    for line in path.read_text().splitlines():
        stage, _, secs = line.partition("\t")
        if secs:
            out[stage] = out.get(stage, 0.0) + float(secs)
    return out


def render_markdown(title: str, results: list[TestSetResult], train: dict | None, timings: dict[str, float],
                    command: str | None, notes: list[str]) -> str:
    env = environment()
    md = [f"# {title}", "",
          f"Written by `speechtl report` on {time.strftime('%Y-%m-%d %H:%M %Z')}; every figure below comes from "
          "the files of this run, none is typed by hand.", ""]
    if command:
        md += ["Command:", "", "```", command, "```", ""]
    if timings:
        total = sum(timings.values())
        md += [f"Time: {total / 60:.1f} min in all ({', '.join(f'{k} {v / 60:.1f}' for k, v in timings.items())} min) "
               f"on {env['cpu_count']} CPU core(s), {env['platform']}; torch {env['packages']['torch']}, "
               f"transformers {env['packages']['transformers']}.", ""]
    if train:
        md += ["## Adaptation", "",
               f"- base model: `{train.get('base_model')}`",
               f"- method: {train.get('method')}" + (f", frozen: {', '.join(train['frozen'])}" if train.get("frozen")
                                                   else ""),
               f"- trainable parameters: {train.get('trainable_parameters'):,} of {train.get('total_parameters'):,} "
               f"({100 * train['trainable_parameters'] / train['total_parameters']:.1f}%)",
               f"- training data: {train.get('train_utterances')} utterances, "
               f"{60 * train.get('train_hours', 0):.1f} min, "
               f"{train.get('train_speakers')} speakers",
               f"- steps: {train.get('steps')} of {train.get('utterances_per_step')} utterances; "
               f"best dev WER {_pct(train.get('best_dev_wer'))}% at step {train.get('best_step')}", ""]
    md += ["## WER before and after adaptation", "", *before_after_table(results), ""]
    md += ["WER and CER in %, corpus level, after the Whisper English normaliser on both sides; change (rel) is "
           "(after − before) / before.", ""]
    md += notes and ["## Notes", "", *[f"- {n}" for n in notes], ""] or []
    md += ["## Per accent", "", *group_table(results, "accent"), "", "## Per speaker", "",
           *group_table(results, "speaker"), ""]
    examples = [(r.name, e) for r in results for e in r.examples]
    if examples:
        md += ["## Largest improvements (examples)", "", "| set | reference | before | after |", "|---|---|---|---|"]
        md += [f"| {n} | {e['ref']} | {e['before']} | {e['after']} |" for n, e in examples]
        md += [""]
    return "\n".join(md)


def write_report(out_dir: Path, title: str, before_dir: Path, after_dir: Path, train_dir: Path | None = None,
                 timings_file: Path | None = None, command: str | None = None, roles: dict[str, str] | None = None,
                 notes: list[str] | None = None) -> tuple[Path, str]:
    """Write ``RESULTS.md`` and ``results.json`` into ``out_dir``; return the path and the main table."""
    results = collect(before_dir, after_dir, roles)
    if not results:
        raise ValueError(f"no evaluations found under {before_dir} or {after_dir} (expected <set>/scores.json)")
    train = None
    if train_dir is not None and (train_dir / "summary.json").is_file():
        train = json.loads((train_dir / "summary.json").read_text())
    timings = read_timings(timings_file)
    md = render_markdown(title, results, train, timings, command, notes or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "RESULTS.md") as f:
        f.write(md)
    write_json(out_dir / "results.json", {
        "schema_version": SCHEMA_VERSION, "title": title, "command": command, "timings_seconds": timings,
        "train": train, "environment": environment(),
        "test_sets": {r.name: {"role": r.role, "before": r.before, "after": r.after} for r in results}})
    return out_dir / "RESULTS.md", "\n".join(before_after_table(results))
