"""Collect a run's before/after evaluations and write RESULTS.md, results.json, plots and Kaldi files.

Inputs are the files the other rooms wrote (``scores.json`` and ``hyp.jsonl`` per test set, the
training dir's ``summary.json``, ``config.yaml`` and ``env.json``, the recipe's ``timings.tsv``), so
a report can always be rebuilt from disk, and nothing in it is typed by hand.

Outputs in ``out_dir``:
- ``RESULTS.md``: summary (did it help, by how much, how sure), before/after tables per test set,
  accent and speaker with speaker-bootstrap intervals, the forgetting score and its formula, error
  analysis, plots, configuration and environment;
- ``results.json`` (``schema_version`` 2): the same figures for machines; see :func:`results_json`;
- ``plots/wer_per_accent.png``, ``plots/speaker_scatter.png``;
- ``scoring/<set>/{before,after}/{per_utt,per_spk,ops}`` (Kaldi style) and ``scoring/<set>/wer_bootci``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechtl.adapt.registry import REGISTRY
from speechtl.errors import ResultsError, UsageError
from speechtl.evaluate.analysis import align_rows, op_counts, top_items, write_ops, write_per_spk
from speechtl.evaluate.evaldir import EvalDir
from speechtl.evaluate.stats import BootstrapConfig, ForgettingScore, forgetting_score, kaldi_bootci
from speechtl.io import atomic_write, environment, write_json
from speechtl.layout import ExperimentDir
from speechtl.report.analyse import SetAnalysis, analyse_set
from speechtl.report.loading import EvalSet, check_same_utterances, load_eval_set
from speechtl.report.tables import (
    DASH,
    UTTERANCE_NOTE,
    cell,
    ci_label,
    pct,
    prob,
    rel,
    rel_ci,
    table,
    unit_mark,
    verdict,
    with_ci,
)

SCHEMA_VERSION = 2
ROLES = ("target", "source", "general", "test")
SOURCE_ROLES = ("source", "general")


@dataclass(frozen=True)
class ReportOptions:
    """Statistics and presentation choices; all of them are written into results.json."""

    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95
    forgetting_weight: float = 1.0
    forgetting_tolerance: float = 0.05
    n_worst: int = 5
    top: int = 10
    n_examples: int = 3
    plots: bool = True

    @property
    def bootstrap(self) -> BootstrapConfig:
        return BootstrapConfig(self.n_boot, self.seed, self.level)


@dataclass
class TestSetResult:
    name: str
    before: EvalSet | None
    after: EvalSet | None
    role: str = "test"
    analysis: SetAnalysis | None = None

    @property
    def any(self) -> EvalSet:
        return self.after or self.before  # type: ignore[return-value]  # one of them exists by construction


def parse_roles(pairs: list[str]) -> dict[str, str]:
    """``SET=ROLE`` strings from the command line, checked."""
    roles = {}
    for p in pairs:
        name, sep, role = p.partition("=")
        if not sep or not name or role not in ROLES:
            raise UsageError(f"--role {p!r}: expected SET=ROLE with ROLE one of {', '.join(ROLES)}")
        roles[name] = role
    return roles


def collect(before_dir: Path, after_dir: Path, roles: dict[str, str] | None = None,
            opts: ReportOptions | None = None) -> list[TestSetResult]:
    """Load every test set found under either dir and analyse those evaluated both before and after."""
    opts = opts or ReportOptions()
    roles = roles or {}
    names = sorted({p.name for d in (before_dir, after_dir) if d.is_dir() for p in d.iterdir()
                    if EvalDir(p).is_scored()})
    unknown = sorted(set(roles) - set(names))
    if unknown:
        raise UsageError(f"--role names test set(s) {unknown} that have no <set>/scores.json under {before_dir} or "
                         f"{after_dir} (found: {names})")
    out = []
    for n in names:
        r = TestSetResult(n, load_eval_set(before_dir / n), load_eval_set(after_dir / n), roles.get(n, "test"))
        if r.before and r.after and r.before.rows is not None and r.after.rows is not None:
            check_same_utterances({"before": r.before, "after": r.after}, n)
            r.analysis = analyse_set(n, r.before, r.after, opts.bootstrap, opts.n_worst, opts.n_examples)
        out.append(r)
    return sorted(out, key=lambda r: (ROLES.index(r.role), r.name))


def forgetting(results: list[TestSetResult], opts: ReportOptions) -> ForgettingScore | None:
    """The combined score, when there is an analysed target set."""
    def pairs(roles: tuple[str, ...]) -> dict:
        return {r.name: (r.analysis.blocks_before, r.analysis.blocks_after) for r in results
                if r.role in roles and r.analysis is not None}

    targets = pairs(("target",))
    if not targets:
        return None
    return forgetting_score(targets, pairs(SOURCE_ROLES), opts.bootstrap, opts.forgetting_weight,
                            opts.forgetting_tolerance)


# ---------------------------------------------------------------------------------------------- tables


def _rate(s: EvalSet | None, metric: str) -> float | None:
    return None if s is None else s.scores[metric]["rate"]


def before_after_table(results: list[TestSetResult], level: float = 0.95) -> list[str]:
    ci = ci_label(level)
    head = ["test set", "role", "utts", "speakers", f"WER before {ci}", f"WER after {ci}", f"change (abs) {ci}",
            "change (rel)", "P(after better)", "CER before", "CER after", "CER change (rel)"]
    rows = []
    for r in results:
        a = r.analysis
        wb, wa = _rate(r.before, "wer"), _rate(r.after, "wer")
        cb, ca = _rate(r.before, "cer"), _rate(r.after, "cer")
        rows.append([r.name, r.role, r.any.utterances, f"{r.any.speakers}{unit_mark(a.wer if a else None)}",
                     with_ci(a.wer.before) if a else pct(wb), with_ci(a.wer.after) if a else pct(wa),
                     with_ci(a.wer.abs_change, True) if a else _abs(wb, wa), rel(_relative(wb, wa)),
                     prob(a.wer.p_better) if a else DASH, pct(cb), pct(ca), rel(_relative(cb, ca))])
    note = [UTTERANCE_NOTE] if any(r.analysis and r.analysis.wer.unit == "utterance" for r in results) else []
    return table(head, rows, "llrr" + "r" * 8) + note


def _relative(b: float | None, a: float | None) -> float | None:
    return None if b is None or a is None or b == 0 else (a - b) / b


def _abs(b: float | None, a: float | None) -> str:
    return DASH if b is None or a is None else pct(a - b, True)


def ops_table(results: list[TestSetResult]) -> list[str]:
    head = ["test set", "system", "WER", "sub", "del", "ins", "errors", "ref words", "CER", "sub", "del", "ins",
            "ref chars"]
    rows = []
    for r in results:
        for label, s in (("before", r.before), ("after", r.after)):
            if s is not None:
                w, c = s.scores["wer"], s.scores["cer"]
                rows.append([r.name, label, pct(w["rate"]), w["sub"], w["dele"], w["ins"], w["errors"], w["ref"],
                             pct(c["rate"]), c["sub"], c["dele"], c["ins"], c["ref"]])
    return table(head, rows, "ll" + "r" * 11)


def accent_table(results: list[TestSetResult], level: float = 0.95) -> list[str]:
    ci = ci_label(level)
    head = ["test set", "accent", "speakers", f"WER before {ci}", f"WER after {ci}", f"change (abs) {ci}",
            "change (rel)", "P(after better)", "CER before", "CER after"]
    rows = []
    for r in results:
        for k, p, gb, ga, wb, wa in _paired_groups(r, "accent"):
            n_spk = len({s for s, acc in r.analysis.speaker_accent.items() if acc == k}) if r.analysis else DASH
            rows.append([r.name, k, f"{n_spk}{unit_mark(p)}", with_ci(p.before) if p else pct(wb),
                         with_ci(p.after) if p else pct(wa), with_ci(p.abs_change, True) if p else _abs(wb, wa),
                         rel(_relative(wb, wa)), prob(p.p_better) if p else DASH,
                         pct(gb["cer"]["rate"] if gb else None), pct(ga["cer"]["rate"] if ga else None)])
    marked = any(p.unit == "utterance" for r in results if r.analysis for p in r.analysis.per_accent.values())
    return table(head, rows, "ll" + "r" * 8) + ([UTTERANCE_NOTE] if marked else [])


def _groups(s: EvalSet | None, group: str) -> dict[str, Any]:
    return {} if s is None else s.scores.get(f"per_{group}", {})


def _paired_groups(r: TestSetResult, group: str):
    """Each accent or speaker of a test set: its paired statistics (if any), scores and WER before and after."""
    before, after = _groups(r.before, group), _groups(r.after, group)
    stats = getattr(r.analysis, f"per_{group}") if r.analysis else {}
    for k in sorted(set(before) | set(after)):
        gb, ga = before.get(k), after.get(k)
        yield k, stats.get(k), gb, ga, *(g["wer"]["rate"] if g else None for g in (gb, ga))


def speaker_table(results: list[TestSetResult], level: float = 0.95) -> list[str]:
    ci = ci_label(level)
    head = ["test set", "speaker", "accent", "utts", "WER before", "WER after", f"change (abs) {ci}",
            "change (rel)", "P(after better)"]
    rows = []
    for r in results:
        for k, p, gb, ga, wb, wa in _paired_groups(r, "speaker"):
            acc = r.analysis.speaker_accent.get(k, DASH) if r.analysis else DASH
            rows.append([r.name, k, acc, (gb or ga)["wer"]["utts"], pct(wb), pct(wa),
                         with_ci(p.abs_change, True) if p else _abs(wb, wa), rel(_relative(wb, wa)),
                         prob(p.p_better) if p else DASH])
    return table(head, rows, "lll" + "r" * 6)


# --------------------------------------------------------------------------------------------- summary


def summary_lines(results: list[TestSetResult], fs: ForgettingScore | None) -> list[str]:
    """What a reader needs first: per set, the change, its interval and a verdict; then the bottom line."""
    lines = []
    for r in results:
        a = r.analysis
        if a is None:
            why = ("no per-utterance rows (hyp.jsonl), so no statistics" if r.before and r.after else
                   f"only evaluated {'after' if r.before is None else 'before'} adaptation; no comparison")
            lines.append(f"- **{r.name}** ({r.role}): {why}.")
            continue
        w = a.wer
        caveat = " The interval resamples the utterances of its one speaker." if w.unit == "utterance" else ""
        size = f"{_n(r.any.speakers, 'speaker')}, {_n(r.any.utterances, 'utterance')}"
        lines.append(f"- **{r.name}** ({r.role}, {size}): WER {pct(w.before.value)}% → {pct(w.after.value)}%, "
                     f"{with_ci(w.abs_change, True)} points, {rel_ci(w.rel_change)} relative; "
                     f"P(after better) = {prob(w.p_better)}: **{verdict(w)}**.{caveat}")
    if fs is not None:
        lines.append(f"- **Forgetting score** {fs.score.value:+.3f}" + _ci3(fs.score) + f" (target gain "
                     f"{rel(fs.gain.value)}" + (f", worst source damage {rel(fs.damage.value)}" if fs.damage else
                                               ", no source/general set to measure damage") +
                     f"; τ = {rel(fs.tolerance)}, λ = {fs.weight:g}): " + _score_words(fs))
    return lines + ["", f"**Bottom line:** {bottom_line(results)}"]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _score_words(fs: ForgettingScore) -> str:
    if fs.score.value < 0:
        return "below 0, the damage to the source/general sets outweighs the gain on the target."
    if fs.score.value == 0:
        return "0, break-even: no net gain from adaptation."
    if fs.score.low is None:
        return "above 0, the gain outweighs the damage (no interval: a set had too little data to resample)."
    if fs.score.low > 0:
        return "above 0 with its whole interval, the adaptation paid for itself."
    return "above 0, the gain outweighs the damage, though the interval reaches 0 or below."


def _ci3(e) -> str:
    return "" if e.low is None else f" [{e.low:+.3f}, {e.high:+.3f}]"


def bottom_line(results: list[TestSetResult]) -> str:
    targets = [r for r in results if r.role == "target" and r.analysis]
    kept = [r for r in results if r.role in SOURCE_ROLES and r.analysis]
    if not targets:
        return "no test set has the role 'target' (give --role SET=target), so there is no verdict on adaptation."
    words = [verdict(r.analysis.wer).split(" (")[0] for r in targets]
    hurt = [r.name for r in kept if verdict(r.analysis.wer).startswith("worse")]
    if "cannot tell" in words:
        return "too little data in the target set(s) to estimate uncertainty; read the figures as indicative only."
    if all(w == "better" for w in words):
        if hurt:
            return (f"adaptation improved the target significantly but made {', '.join(hurt)} significantly worse; "
                    "weigh the two with the forgetting score.")
        tail = ("and no source/general set got significantly worse." if kept else
                "(no source/general set was evaluated, so forgetting is unknown).")
        return f"adaptation helped: the target WER fell significantly {tail}"
    if any(w == "worse" for w in words):
        return "adaptation made the target significantly worse."
    return "no significant change on the target at this confidence level; more test speakers would narrow the CI."


# ------------------------------------------------------------------------------------------ error analysis


def _side_by_side(left: list[tuple[str, int]], right: list[tuple[str, int]]) -> list[list]:
    blank = (DASH, "")
    n = max(len(left), len(right))
    return [[*(left[i] if i < len(left) else blank), *(right[i] if i < len(right) else blank)] for i in range(n)]


def _words(items: list) -> list[tuple[str, int]]:
    return [(cell(w), n) for w, n in items]


def _subs(items: list) -> list[tuple[str, int]]:
    return [(cell(f"{r} → {h}"), n) for (r, h), n in items]


def error_section(name: str, a: SetAnalysis, top: int) -> list[str]:
    """Most frequent edits before/after, fixed and broken words, most improved and worst utterances."""
    b, f = a.ops_before, a.ops_after
    md = [f"### {name}", ""]
    md += table(["substitution before (ref → hyp)", "n", "substitution after", "n"],
                _side_by_side(_subs(top_items(b.substitutions, top)), _subs(top_items(f.substitutions, top))), "lrlr")
    md += [""] + table(["deleted before", "n", "deleted after", "n"],
                       _side_by_side(_words(top_items(b.deletions, top)), _words(top_items(f.deletions, top))), "lrlr")
    md += [""] + table(["inserted before", "n", "inserted after", "n"],
                       _side_by_side(_words(top_items(b.insertions, top)), _words(top_items(f.insertions, top))),
                       "lrlr")
    md += ["", f"Words fixed by adaptation (wrong before, right after): {sum(a.changes.fixed.values())} "
           f"occurrences; broken (right before, wrong after): {sum(a.changes.broken.values())}.", ""]
    md += table(["fixed", "n", "broken", "n"],
                _side_by_side(_words(top_items(a.changes.fixed, top)), _words(top_items(a.changes.broken, top))),
                "lrlr")
    if a.improved:
        md += ["", "Most improved utterances:", ""]
        md += table(["id", "reference", "before", "after"],
                    [[e["id"], cell(e["ref"]), cell(e["before"]), cell(e["after"])] for e in a.improved], "llll")
    if a.worst:
        md += ["", f"Worst utterances after adaptation ({len(a.worst)}), each aligned to its normalised reference "
               "before and after (`***`: no word; op C/S/D/I):", "", "```"]
        for w in a.worst:
            md.append(f"{w.id}  speaker {w.speaker}, {w.ref_words} words: {w.errors_before} errors before, "
                      f"{w.errors_after} after")
            for label, (ref, hyp, ops) in (("before", w.before), ("after", w.after)):
                md += [f"  REF    {ref}", f"  {label.upper():<6} {hyp}", f"  OP     {ops}"]
        md.append("```")
    return md + [""]


# ------------------------------------------------------------------------------------------- rendering


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


@dataclass
class RunInfo:
    """What the training dir and the recipe say about the run."""

    train: dict | None = None
    config_text: str | None = None
    train_env: dict | None = None
    timings: dict[str, float] | None = None
    command: str | None = None

    @classmethod
    def load(cls, train_dir: Path | None, timings_file: Path | None, command: str | None) -> RunInfo:
        info = cls(timings=read_timings(timings_file), command=command)
        if train_dir is not None:
            files = {n: train_dir / n for n in ("summary.json", "config.yaml", "env.json")}
            info.train = json.loads(files["summary.json"].read_text()) if files["summary.json"].is_file() else None
            info.config_text = files["config.yaml"].read_text() if files["config.yaml"].is_file() else None
            info.train_env = json.loads(files["env.json"].read_text()) if files["env.json"].is_file() else None
        return info


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.2f} GiB" if n else DASH


#: What WiSE-FT scales, per method (see speechtl.adapt.merge).
_UPDATE = {m.name: m.update for m in REGISTRY.values() if m.update}


def _general(wer: float | None) -> str:
    return f" (general dev WER {pct(wer)}%)" if wer is not None else ""


def _selection_lines(train: dict) -> list[str]:
    """How the best checkpoint was chosen, when a general dev set weighed in (select_weight)."""
    w = train.get("select_weight") or 0
    if not w:
        return []
    return [f"- best checkpoint chosen on {1 - w:g} × target dev WER + {w:g} × general dev WER "
            f"(`{train.get('dev_general')}`): {pct(train.get('best_select_score'))}%"]


def _wise_lines(train: dict) -> list[str]:
    if train.get("wise_alpha") is None:
        return []
    update = _UPDATE.get(train.get("method"), "the update")
    return [f"- final model: WiSE-FT, base + {train['wise_alpha']:g} × {update}; dev WER "
            f"{pct(train.get('final_dev_wer'))}%{_general(train.get('final_general_dev_wer'))} "
            f"(the adapted model alone: {pct(train.get('best_dev_wer'))}%)"]


def _control_lines(train: dict) -> list[str]:
    """What the run did besides the method: distillation, replay, augmentation (off ones are left out)."""
    lines = []
    if train.get("distill_weight"):
        lines.append(f"- distillation to the base model: weight {train['distill_weight']:g}, temperature "
                     f"{train.get('distill_temperature', 1):g}")
    if train.get("replay_per_batch"):
        lines.append(f"- replay: {train['replay_per_batch']} utterance(s) of each batch from "
                     f"`{train.get('replay_manifest')}` ({train.get('replay_utterances')} utterances)")
    for name, block in (train.get("augment") or {}).items():
        settings = ", ".join(f"{k} {v}" for k, v in block.items())
        lines.append(f"- augmentation of the training audio: {name} ({settings})")
    gate = train.get("gate")
    if gate:
        cal = gate.get("calibration", {})
        dev = cal.get("dev", {})
        rule = {"base_share": f"the base keeps at most {100 * cal.get('config', {}).get('base_share', 0):g}% of the "
                              "target dev set", "weighted": "weighted target and general dev WER",
                "fixed": "fixed"}.get(cal.get("rule"), cal.get("rule"))
        lines.append(f"- confidence gate: the base model decodes first and keeps an utterance when its mean token "
                     f"log-probability is at least {gate['threshold']:.3f} ({rule}) and its text does not loop; "
                     f"on the target dev set {dev.get('to_adapter')} of {dev.get('utterances')} went to the "
                     f"adapter (dev WER {pct(dev.get('wer_gated'))}% gated, {pct(dev.get('wer_adapter'))}% adapter "
                     "alone)")
    return lines


def train_lines(train: dict) -> list[str]:
    t, n = train.get("trainable_parameters"), train.get("total_parameters")
    params = f"{t:,} of {n:,} ({100 * t / n:.1f}%)" if t is not None and n else DASH
    parts = train.get("freeze") or train.get("frozen")  # "frozen": summaries from before the method blocks
    frozen = f", frozen: {', '.join(parts)}" if parts else ""
    best = train.get("best_dev_wer")
    return ["## Adaptation", "",
            f"- base model: `{train.get('base_model')}`",
            f"- method: {train.get('method')}{frozen}",
            f"- trainable parameters: {params}",
            f"- training data: {train.get('train_utterances')} utterances, {60 * train.get('train_hours', 0):.1f} min, "
            f"{_n(train.get('train_speakers', 0), 'speaker')}",
            f"- steps: {train.get('steps')} of {train.get('utterances_per_step')} utterances; best dev WER "
            f"{pct(best)}% at step {train.get('best_step')}{_general(train.get('best_general_dev_wer'))}",
            *_selection_lines(train),
            *_control_lines(train),
            *([f"- training took {train['seconds'] / 60:.1f} min; peak memory {_gib(train.get('peak_memory_bytes'))} "
               "(GPU: most allocated by torch; CPU: the process's peak resident size)"]
              if train.get("seconds") else []),
            *_wise_lines(train),
            *([f"- vocabulary: {train['vocabulary']}"] if train.get("vocabulary") == "rebuilt" else []), ""]


def forgetting_lines(fs: ForgettingScore | None, results: list[TestSetResult], level: float = 0.95) -> list[str]:
    md = ["## Forgetting", ""]
    kept = [r for r in results if r.role in SOURCE_ROLES]
    if kept:
        md += ["Change on the source/general set(s): " + "; ".join(
            f"{r.name} {rel_ci(r.analysis.wer.rel_change)} relative ({verdict(r.analysis.wer)})" if r.analysis
            else f"{r.name}: not evaluated before and after" for r in kept) + ".", ""]
    if fs is None:
        return md + ["No forgetting score: no test set has role `target` with before and after evaluations "
                     "(give `--role SET=target`).", ""]
    md += ["Combined score (higher is better; 0 = break-even):", "", f"    {fs.formula}", "",
           *table(["", f"value {ci_label(level)}"], [
               ["G: target gain (" + ", ".join(fs.target_sets) + ")", rel_ci(fs.gain)],
               ["D: worst source damage (" + (", ".join(fs.source_sets) or "none") + ")",
                rel_ci(fs.damage) if fs.damage else DASH],
               ["τ (tolerance), λ (weight)", f"{rel(fs.tolerance)}, {fs.weight:g}"],
               ["**score**", f"**{fs.score.value:+.3f}**{_ci3(fs.score)}"]], "lr"), ""]
    if fs.damage_by_set:
        md += ["Damage per source/general set: " + ", ".join(f"{k} {rel(v)}" for k, v in fs.damage_by_set.items())
               + ".", ""]
    else:
        md += ["No source/general set was evaluated before and after, so the score is the target gain alone.", ""]
    return md


def environment_lines(env: dict, info: RunInfo, opts: ReportOptions) -> list[str]:
    pk = env["packages"]
    md = ["## Configuration and environment", "",
          f"- statistics: {opts.n_boot} bootstrap replicates over speakers, seed {opts.seed}, "
          f"{100 * opts.level:g}% percentile intervals; forgetting λ = {opts.forgetting_weight:g}, "
          f"τ = {rel(opts.forgetting_tolerance)}",
          f"- report: Python {env['python']}, {env['platform']}, {env['cpu_count']} CPU core(s); "
          + ", ".join(f"{k} {v}" for k, v in pk.items() if v) + f"; git {env.get('speechtl_git') or DASH}"]
    if info.train_env:
        te = info.train_env
        md.append(f"- training: Python {te.get('python')}, {te.get('platform')}; torch "
                  f"{te.get('packages', {}).get('torch')}, transformers {te.get('packages', {}).get('transformers')}; "
                  f"git {te.get('speechtl_git') or DASH} (full record in `results.json` → `environment.train`)")
    if info.config_text:
        md += ["", "<details><summary>training configuration (train/config.yaml)</summary>", "", "```yaml",
               info.config_text.rstrip(), "```", "", "</details>"]
    return md + [""]


def files_lines(results: list[TestSetResult], plots: dict[str, Path]) -> list[str]:
    return ["## Files", "",
            "- `results.json`: every figure above, for machines (schema version "
            f"{SCHEMA_VERSION}), with the configuration and both environments",
            "- `scoring/<set>/{before,after}/per_utt`, `per_spk`, `ops`: Kaldi-style alignments, per-speaker counts "
            "and edit-operation counts; `scoring/<set>/wer_bootci`: the intervals in Kaldi's format",
            *[f"- `plots/{p.name}`" for p in plots.values()], ""]


def gate_lines(results: list[TestSetResult]) -> list[str]:
    """Where a gated model's utterances went, per test set (its ``scores.json``'s ``gate``); nothing without a gate."""
    gated = [(r.name, r.after.scores["gate"]) for r in results if r.after and r.after.scores.get("gate")]
    if not gated:
        return []
    return ["Confidence gate (the base model's transcript kept where it was sure of it): utterances decoded by the "
            "adapter: " + ", ".join(f"{name} {g['to_adapter']} of {g['utterances']}" for name, g in gated) + ".", ""]


def render_markdown(title: str, results: list[TestSetResult], info: RunInfo, fs: ForgettingScore | None,
                    plots: dict[str, Path], notes: list[str], opts: ReportOptions, env: dict) -> str:
    md = [f"# {title}", "",
          f"Written by `speechtl report` on {time.strftime('%Y-%m-%d %H:%M %Z')}; every figure below comes from "
          "the files of this run, none is typed by hand.", ""]
    if info.command:
        md += ["Command:", "", "```", info.command, "```", ""]
    if info.timings:
        total = sum(info.timings.values())
        md += [f"Time: {total / 60:.1f} min in all ({', '.join(f'{k} {v / 60:.1f}' for k, v in info.timings.items())}"
               f" min) on {env['cpu_count']} CPU core(s), {env['platform']}; torch {env['packages']['torch']}, "
               f"transformers {env['packages']['transformers']}.", ""]
    md += ["## Summary", "", *summary_lines(results, fs), ""]
    if info.train:
        md += train_lines(info.train)
    md += ["## WER before and after adaptation", "", *before_after_table(results, opts.level), "",
           f"WER and CER in %, corpus level (errors / reference words over all utterances), after the Whisper English "
           f"normaliser on both sides. Intervals: {100 * opts.level:g}% percentile bootstrap over speakers "
           f"({opts.n_boot} replicates, seed {opts.seed}), because one speaker's utterances are not independent; the "
           "change is paired (the same speakers drawn for both systems). P(after better): share of replicates in "
           "which the adapted model makes fewer errors, ties counted half (0.5 = no difference). change (rel) = "
           "(after − before) / before.", "", "Edit operations:", "", *ops_table(results), ""]
    md += gate_lines(results)
    md += notes and ["## Notes", "", *[f"- {n}" for n in notes], ""] or []
    md += forgetting_lines(fs, results, opts.level)
    md += ["## Per accent", "", *accent_table(results, opts.level), "",
           "Intervals by bootstrap over the accent's speakers (†: over utterances).", "",
           "## Per speaker", "", *speaker_table(results, opts.level), "",
           "One speaker can't be resampled by speakers: here the interval resamples that speaker's utterances, "
           "so it says how stable the speaker's own figure is.", ""]
    if plots:
        md += ["## Plots", ""] + [f"![{k}](plots/{p.name})" for k, p in plots.items()] + [""]
    analysed = [r for r in results if r.analysis]
    if analysed:
        md += ["## Error analysis", "", "On normalised text; the most frequent errors before and after, the words "
               "adaptation fixed and broke, and the worst utterances. Full lists: `results.json`, "
               "`scoring/<set>/*/ops`.", ""]
        for r in analysed:
            md += error_section(r.name, r.analysis, opts.top)
    md += environment_lines(env, info, opts)
    md += files_lines(results, plots)
    return "\n".join(md)


# --------------------------------------------------------------------------------------------- outputs


def results_json(title: str, results: list[TestSetResult], info: RunInfo, fs: ForgettingScore | None,
                 plots: dict[str, Path], opts: ReportOptions, env: dict) -> dict:
    """The machine view. Schema 2: ``test_sets.<set>`` keeps ``role``, ``before`` and ``after`` (each set's
    ``scores.json``) from schema 1 and adds ``statistics`` (paired WER/CER, per accent, per speaker, error
    analysis; see :meth:`SetAnalysis.to_dict`); top level adds ``forgetting``, ``options``, ``config`` (the
    training config text), ``environment`` (``report`` and ``train``) and ``plots``."""
    return {"schema_version": SCHEMA_VERSION, "title": title, "command": info.command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "timings_seconds": info.timings, "train": info.train,
            "config": info.config_text, "environment": {"report": env, "train": info.train_env},
            "options": {**opts.__dict__}, "forgetting": fs.to_dict() if fs else None,
            "plots": {k: f"plots/{p.name}" for k, p in plots.items()},
            "test_sets": {r.name: {"role": r.role, "before": r.before.scores if r.before else None,
                                   "after": r.after.scores if r.after else None,
                                   "statistics": r.analysis.to_dict(opts.top) if r.analysis else None}
                          for r in results}}


def write_plots(out_dir: Path, results: list[TestSetResult], level: float) -> dict[str, Path]:
    from speechtl.report.plots import AccentBar, SpeakerPoint, plot_accent_wer, plot_speaker_scatter

    analysed = [r for r in results if r.analysis]
    if not analysed:
        return {}
    bars = [AccentBar(f"{r.name}\n{acc}", p.before, p.after) for r in analysed
            for acc, p in sorted(r.analysis.per_accent.items())]
    points = [SpeakerPoint(r.name, s, p.before.value, p.after.value) for r in analysed
              for s, p in sorted(r.analysis.per_speaker.items())]
    return {"WER per accent": plot_accent_wer(bars, out_dir / "plots" / "wer_per_accent.png", level),
            "WER per speaker, before vs after": plot_speaker_scatter(points, out_dir / "plots" / "speaker_scatter.png")}


def write_scoring_files(out_dir: Path, results: list[TestSetResult]) -> None:
    """Kaldi-style artefacts per test set and system, beside RESULTS.md under ``scoring/``."""
    for r in results:
        d = out_dir / "scoring" / r.name
        for label, s in (("before", r.before), ("after", r.after)):
            if s is None or s.rows is None:
                continue
            sd = d / label
            sd.mkdir(parents=True, exist_ok=True)
            if EvalDir(s.path).per_utt.is_file():
                shutil.copyfile(EvalDir(s.path).per_utt, sd / "per_utt")
            else:
                from speechtl.evaluate.evaldir import write_per_utt

                write_per_utt(s.rows, sd / "per_utt")
            write_per_spk(s.rows, sd / "per_spk")
            ops = (r.analysis.ops_before if label == "before" else r.analysis.ops_after) if r.analysis else \
                op_counts(align_rows(s.rows).values())
            write_ops(ops, sd / "ops")
        if r.analysis:
            with atomic_write(d / "wer_bootci") as f:
                f.write(kaldi_bootci(f"{r.name} WER", r.analysis.wer, "WER"))
                if r.analysis.cer:
                    f.write(kaldi_bootci(f"{r.name} CER", r.analysis.cer, "CER"))


def write_report(out_dir: Path, title: str, before_dir: Path, after_dir: Path, train_dir: Path | None = None,
                 timings_file: Path | None = None, command: str | None = None, roles: dict[str, str] | None = None,
                 notes: list[str] | None = None, opts: ReportOptions | None = None) -> tuple[Path, str]:
    """Write every report output into ``out_dir``; return RESULTS.md's path and the text to print."""
    opts = opts or ReportOptions()
    results = collect(before_dir, after_dir, roles, opts)
    if not results:
        raise ResultsError(f"no evaluations found under {before_dir} or {after_dir} (expected <set>/scores.json)")
    info = RunInfo.load(train_dir, timings_file, command)
    fs = forgetting(results, opts)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(out_dir, results, opts.level) if opts.plots else {}
    write_scoring_files(out_dir, results)
    env = environment()
    with atomic_write(out_dir / "RESULTS.md") as f:
        f.write(render_markdown(title, results, info, fs, plots, notes or [], opts, env))
    write_json(out_dir / "results.json", results_json(title, results, info, fs, plots, opts, env))
    exp = ExperimentDir(out_dir)
    if after_dir.resolve() == exp.after.resolve():  # a report of an experiment: its base evaluations are its own
        exp.link_before(before_dir)
    printed = [*before_after_table(results, opts.level), "", *summary_lines(results, fs)]
    return out_dir / "RESULTS.md", "\n".join(printed)
