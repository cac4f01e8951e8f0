"""``speechtl compare``: many systems side by side on the same test sets, best first, with intervals.

What a PATH may be (``LABEL=PATH`` names the system; by default the label is the dir's name):

1. an experiment dir (:class:`speechtl.layout.ExperimentDir`: ``PATH/eval/after/<set>/``, and the base model's
   ``PATH/eval/before/<set>/`` or the shared dir its ``eval/before.json`` names; optional
   ``PATH/train/summary.json``): the adapted model (``LABEL``) and its base model (``LABEL (before)``);
   identical base evaluations from several experiments are listed once (``--base-label`` names it);
2. a dir of test sets (``PATH/<set>/scores.json`` + ``hyp.jsonl``), e.g. ``speechtl eval``/``score`` outputs
   of another model;
3. one test-set dir (``PATH/scores.json`` + ``hyp.jsonl``): the set is named after the dir, the system
   after its parent dir.

On each test set every system must have scored the same utterances against the same references;
otherwise the error names the utterance and both files. Intervals are speaker-bootstrap
(:mod:`speechtl.evaluate.stats`), and each system is compared, paired, with the best one; ``--pair A B`` adds
the paired difference of two named systems (B − A) on every set both have, e.g. one method trained two ways.
Outputs in ``--out``: ``COMPARE.md``, ``compare.json``, ``plots/wer_vs_params.png``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from speechtl.errors import ResultsError, UsageError
from speechtl.evaluate.evaldir import EvalDir
from speechtl.evaluate.stats import (
    BootstrapConfig,
    Estimate,
    ForgettingScore,
    PairedResult,
    bootstrap_rate,
    forgetting_score,
    paired_bootstrap,
    resampling_blocks,
)
from speechtl.io import atomic_write, environment, write_json
from speechtl.layout import ExperimentDir
from speechtl.report.loading import EvalSet, check_same_utterances, load_eval_set
from speechtl.report.results import read_timings
from speechtl.report.tables import (
    DASH,
    UTTERANCE_NOTE,
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

SCHEMA_VERSION = 1
SOURCE_ROLES = ("source", "general")


@dataclass
class System:
    """One recogniser's evaluations, by test set name."""

    label: str
    sets: dict[str, EvalSet]
    kind: str  # adapted | base | external
    source: Path
    train: dict | None = None
    base_of: list[str] = field(default_factory=list)  # for a base: the experiments it is the base of
    timings: dict[str, float] = field(default_factory=dict)  # an experiment's recipe stages: wall seconds

    @property
    def trainable(self) -> int | None:
        return self.train.get("trainable_parameters") if self.train and self.kind == "adapted" else None

    @property
    def method(self) -> str:
        if self.kind == "adapted" and self.train:
            frozen = self.train.get("freeze") or self.train.get("frozen")  # "frozen": older summaries
            return f"{self.train.get('method')}" + (f" (frozen: {', '.join(frozen)})" if frozen else "")
        if self.kind == "external":  # a dir `speechtl eval --out` decoded (it has a run key) names its model
            models = sorted({str(es.scores["model"]) for es in self.sets.values()
                             if es.scores.get("model") and es.scores.get("run_key")})
            return f"speechtl eval of {', '.join(models)}" if models else "external"
        return {"base": "none (base model)"}.get(self.kind, self.kind)


def _load_sets(d: Path) -> dict[str, EvalSet]:
    sets = {}
    for p in sorted(d.iterdir()) if d.is_dir() else []:
        s = load_eval_set(p) if p.is_dir() else None
        if s is not None:
            if s.rows is None:
                raise ResultsError(f"{EvalDir(p).hyp} not found: compare needs the per-utterance rows of every set")
            sets[p.name] = s
    return sets


def discover(spec: str) -> list[System]:
    """The system(s) a command-line PATH (or LABEL=PATH) stands for; see the module docstring."""
    label, sep, rest = spec.partition("=")
    path = Path(rest if sep and not Path(spec).exists() else spec)
    label = label if sep and not Path(spec).exists() else ""
    if not path.is_dir():
        raise ResultsError(f"{path}: not a directory (expected an experiment dir, a dir of test sets or a test-set "
                           "dir)")
    name = label or path.resolve().name
    exp = ExperimentDir(path)
    if exp.eval.is_dir():
        train = exp.read_summary()
        out = []
        if after := _load_sets(exp.after):
            out.append(System(name, after, "adapted", path, train, timings=read_timings(exp.timings)))
        if exp.before is not None and (before := _load_sets(exp.before)):  # its own, or the shared one it links
            out.append(System(f"{name} (before)", before, "base", exp.before, train, [name]))
        if not out:
            raise ResultsError(f"{path}/eval: no <set>/scores.json under eval/before (or where eval/before.json "
                               "points) or eval/after")
        return out
    if EvalDir(path).is_scored():
        s = load_eval_set(path)
        if s is None or s.rows is None:
            raise ResultsError(f"{EvalDir(path).hyp} not found: compare needs the per-utterance rows")
        return [System(label or path.resolve().parent.name, {path.name: s}, "external", path)]
    if sets := _load_sets(path):
        return [System(name, sets, "external", path)]
    raise ResultsError(f"{path}: found no evaluations: expected eval/{{before,after}}/<set>/scores.json (an experiment "
                       "dir), <set>/scores.json (a dir of test sets) or scores.json (one test set)")


def _fingerprint(s: System) -> str:
    h = hashlib.sha256()
    for name, es in sorted(s.sets.items()):
        h.update(f"{name}\x00{es.scores.get('model')}\x00".encode())
        for r in sorted(es.rows or [], key=lambda r: r["id"]):
            h.update(f"{r['id']}\x00{r['hyp_norm']}\x01".encode())
    return h.hexdigest()


def merge_bases(systems: list[System], base_label: str | None = None) -> list[System]:
    """List a base model once when several experiments evaluated it identically (same hypotheses); a base shared
    by every experiment is called ``base_label`` when one is given."""
    out: list[System] = []
    seen: dict[str, System] = {}
    for s in systems:
        if s.kind != "base":
            out.append(s)
            continue
        key = _fingerprint(s)
        if key in seen:
            seen[key].base_of += s.base_of
            continue
        seen[key] = s
        out.append(s)
    for s in seen.values():
        if base_label and len(seen) == 1:
            s.label = base_label
        elif len(s.base_of) > 1:
            model = next(iter(s.sets.values())).scores.get("model") or "base model"
            s.label = f"base: {Path(str(model)).name or model}"
    labels = [s.label for s in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UsageError(f"two systems are labelled {dup}: name them with LABEL=PATH")
    return out


@dataclass
class Entry:
    """One system on one test set: its WER with interval and its paired comparison with the best."""

    system: System
    wer: Estimate
    scores: dict
    vs_best: PairedResult | None = None  # before = best, after = this system


@dataclass
class Leaderboard:
    test_set: str
    role: str
    entries: list[Entry]
    absent: list[str]  # systems not evaluated on this set


def leaderboard(name: str, systems: list[System], role: str, cfg: BootstrapConfig) -> Leaderboard:
    have = [s for s in systems if name in s.sets]
    check_same_utterances({s.label: s.sets[name] for s in have}, name)
    blocks = {s.label: resampling_blocks(s.sets[name].rows) for s in have}
    # One seed per test set: every system is resampled on the same speakers, and its interval is the one
    # `speechtl report` and `speechtl score` give for the same evaluation.
    seed = cfg.derive(name, "wer")
    entries = [Entry(s, bootstrap_rate(blocks[s.label], seed), s.sets[name].scores) for s in have]
    entries.sort(key=lambda e: (e.wer.value, e.system.label))
    best = entries[0]
    for e in entries[1:]:
        e.vs_best = paired_bootstrap(blocks[best.system.label], blocks[e.system.label], seed, f"test set {name}")
    return Leaderboard(name, role, entries, [s.label for s in systems if name not in s.sets])


@dataclass
class Pair:
    """Two named systems on one test set, paired over the same speakers: ``result.before`` is ``first``."""

    test_set: str
    first: str
    second: str
    result: PairedResult

    def to_dict(self) -> dict:
        return {"test_set": self.test_set, "first": self.first, "second": self.second, **self.result.to_dict()}


def paired_systems(pairs: list[tuple[str, str]], systems: list[System], boards: list[Leaderboard],
                   cfg: BootstrapConfig) -> list[Pair]:
    """Each requested pair on each set both systems were scored on, resampled as that set's leaderboard is."""
    by_label = {s.label: s for s in systems}
    unknown = sorted({x for p in pairs for x in p} - set(by_label))
    if unknown:
        raise UsageError(f"--pair: no system named {', '.join(map(repr, unknown))}; the systems are: "
                         f"{', '.join(map(repr, by_label))}")
    out = []
    for a, b in pairs:
        for board in boards:
            n = board.test_set
            if n in by_label[a].sets and n in by_label[b].sets:
                before, after = (resampling_blocks(by_label[x].sets[n].rows) for x in (a, b))
                out.append(Pair(n, a, b, paired_bootstrap(before, after, cfg.derive(n, "wer"), f"test set {n}")))
    return out


def pair_lines(pairs: list[Pair], level: float) -> list[str]:
    ci = ci_label(level)
    rows = [[p.test_set, p.first, p.second, with_ci(p.result.before), with_ci(p.result.after),
             with_ci(p.result.abs_change, True) + unit_mark(p.result), rel_ci(p.result.rel_change),
             prob(p.result.p_better), verdict(p.result)] for p in pairs]
    md = ["## Paired differences", "",
          "Second system minus first, on the same utterances, resampled as in the leaderboards; P(second better): "
          "share of replicates in which the second makes fewer errors.", "",
          *table(["test set", "first", "second", f"first WER {ci}", f"second WER {ci}", f"Δ {ci}", "relative",
                  "P(second better)", "verdict"], rows, "lllrrrrrl")]
    if any(p.result.unit == "utterance" for p in pairs):
        md += ["", UTTERANCE_NOTE]
    return md + [""]


def run_forgetting(systems: list[System], roles: dict[str, str], cfg: BootstrapConfig, weight: float,
                   tolerance: float) -> dict[str, ForgettingScore]:
    """Forgetting score of each experiment (adapted system with its own base), where roles name a target."""
    bases = {b: s for s in systems if s.kind == "base" for b in s.base_of}
    out = {}
    for s in systems:
        base = bases.get(s.label)
        if s.kind != "adapted" or base is None:
            continue

        def pairs(wanted: tuple[str, ...], s: System = s, base: System = base) -> dict:
            return {n: (resampling_blocks(base.sets[n].rows), resampling_blocks(s.sets[n].rows))
                    for n, r in roles.items() if r in wanted and n in s.sets and n in base.sets}

        if targets := pairs(("target",)):
            # The same seeds as the experiment's own report, so both give the same score.
            out[s.label] = forgetting_score(targets, pairs(SOURCE_ROLES), cfg, weight, tolerance)
    return out


def roles_from_runs(systems: list[System]) -> dict[str, str]:
    """Roles recorded by each experiment's own report (``results.json``), when it has one."""
    roles: dict[str, str] = {}
    for s in systems:
        f = s.source / "results.json"
        if s.kind == "adapted" and f.is_file():
            for name, t in json.loads(f.read_text()).get("test_sets", {}).items():
                roles.setdefault(name, t.get("role", "test"))
    return roles


def _params(s: System) -> str:
    return f"{s.trainable:,}" if s.trainable is not None else DASH


def board_lines(b: Leaderboard, level: float = 0.95) -> list[str]:
    ci = ci_label(level)
    head = ["rank", "system", "method", "trainable params", f"WER {ci}", f"Δ vs best {ci}",
            "P(better than best)", "CER", "sub", "del", "ins", "utts", "speakers"]
    rows = []
    for i, e in enumerate(b.entries, start=1):
        w = e.scores["wer"]
        rows.append([i, e.system.label, e.system.method, _params(e.system), with_ci(e.wer),
                     with_ci(e.vs_best.abs_change, True) if e.vs_best else DASH,
                     prob(e.vs_best.p_better) if e.vs_best else DASH, pct(e.scores["cer"]["rate"]), w["sub"],
                     w["dele"], w["ins"], e.scores.get("utterances", DASH), len(e.scores.get("per_speaker", {}))])
    md = [f"### {b.test_set} ({b.role})", "", *table(head, rows, "rll" + "r" * 10)]
    if b.absent:
        md += ["", f"Not evaluated on {b.test_set}: {', '.join(b.absent)}."]
    return md + [""]


def time_lines(systems: list[System]) -> list[str]:
    """Wall minutes of each experiment's recipe stages and their sum: what the whole comparison took to make."""
    timed = [s for s in systems if s.timings]
    if not timed:
        return []
    stages = sorted({k for s in timed for k in s.timings})
    rows = [[s.label, *(f"{s.timings[k] / 60:.1f}" if k in s.timings else DASH for k in stages),
             f"{sum(s.timings.values()) / 60:.1f}"] for s in timed]
    rows.append(["all", *(f"{sum(s.timings.get(k, 0.0) for s in timed) / 60:.1f}" for k in stages),
                 f"**{sum(sum(s.timings.values()) for s in timed) / 60:.1f}**"])
    return ["## Time", "", "Wall minutes of each recipe stage, as each experiment's `timings.tsv` records them (a "
            "stage run again, to resume or to find it done, counts every run; a base evaluation shared by several "
            "experiments is timed in the first one only).", "",
            *table(["system", *stages, "total"], rows, "l" + "r" * (len(stages) + 1)), ""]


def render(title: str, boards: list[Leaderboard], fs: dict[str, ForgettingScore], systems: list[System],
           cfg: BootstrapConfig, plot: Path | None, pairs: list[Pair] | None = None, times: bool = True) -> str:
    md = [f"# {title}", "", f"Written by `speechtl compare` on {time.strftime('%Y-%m-%d %H:%M %Z')} from the "
          "evaluation files of each system; nothing is typed by hand.", "", "## Systems", ""]
    md += table(["system", "kind", "method", "trainable params", "of total", "from"],
                [[s.label, s.kind, s.method, _params(s),
                  f"{s.train['total_parameters']:,}" if s.trainable is not None and s.train.get("total_parameters")
                  else DASH, f"`{s.source}`"] for s in systems], "lllrrl")
    md += ["", "## Leaderboards (best first)", "",
           f"WER in %, corpus level. Intervals: {100 * cfg.level:g}% bootstrap over speakers ({cfg.n_boot} replicates, "
           f"seed {cfg.seed}). Δ vs best: this system's WER minus the best one's, paired over the same speakers; "
           "P(better than best): share of replicates in which this system makes fewer errors than the best (ties "
           "half), so a value near 0.5 means the two can't be told apart.", ""]
    for b in boards:
        md += board_lines(b, cfg.level)
    if pairs:
        md += pair_lines(pairs, cfg.level)
    if fs:
        md += ["## Forgetting score per experiment", "", "    " + next(iter(fs.values())).formula, ""]
        md += table(["system", "target gain G", "worst source damage D", f"score {ci_label(cfg.level)}"],
                    [[k, rel_ci(v.gain), rel_ci(v.damage) if v.damage else DASH,
                      f"{v.score.value:+.3f}" + ("" if v.score.low is None else
                                                 f" [{v.score.low:+.3f}, {v.score.high:+.3f}]")]
                     for k, v in sorted(fs.items(), key=lambda kv: -kv[1].score.value)], "lrrr")
        first = next(iter(fs.values()))
        md += ["", f"τ = {rel(first.tolerance)}, λ = {first.weight:g}.", ""]
    md += time_lines(systems) if times else []
    if plot is not None:
        md += ["## WER against trainable parameters", "", f"![WER against trainable parameters](plots/{plot.name})",
               "", "Dashed lines: systems without adaptation (base models, external systems).", ""]
    return "\n".join(md)


def compare(paths: list[str], out_dir: Path, cfg: BootstrapConfig | None = None, roles: dict[str, str] | None = None,
            title: str = "Comparison", weight: float = 1.0, tolerance: float = 0.05, plots: bool = True,
            base_label: str | None = None, pairs: list[tuple[str, str]] | None = None,
            times: bool = True) -> tuple[Path, str]:
    """Write COMPARE.md, compare.json and the plot; return COMPARE.md's path and the leaderboards (and the paired
    differences ``pairs`` asks for: (first, second) system labels) as text."""
    cfg = cfg or BootstrapConfig()
    if not paths:
        raise UsageError("compare needs at least one experiment or evaluation dir")
    systems = merge_bases([s for p in paths for s in discover(p)], base_label)
    roles = {**roles_from_runs(systems), **(roles or {})}
    names = sorted({n for s in systems for n in s.sets})
    order = ("target", "source", "general", "test")
    boards = sorted((leaderboard(n, systems, roles.get(n, "test"), cfg) for n in names),
                    key=lambda b: (order.index(b.role) if b.role in order else len(order), b.test_set))
    paired = paired_systems(pairs or [], systems, boards, cfg)
    fs = run_forgetting(systems, roles, cfg, weight, tolerance)
    plot = None
    if plots:
        from speechtl.report.plots import MethodPoint, plot_wer_vs_params

        panels = {b.test_set: [MethodPoint(e.system.label, e.system.trainable, e.wer) for e in b.entries]
                  for b in boards}
        plot = plot_wer_vs_params(panels, out_dir / "plots" / "wer_vs_params.png", cfg.level)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "COMPARE.md") as f:
        f.write(render(title, boards, fs, systems, cfg, plot, paired, times))
    write_json(out_dir / "compare.json", {
        "schema_version": SCHEMA_VERSION, "title": title, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bootstrap": cfg.to_dict(), "roles": roles, "environment": environment(),
        "systems": [{"label": s.label, "kind": s.kind, "method": s.method, "source": str(s.source),
                     "trainable_parameters": s.trainable, "train": s.train if s.kind == "adapted" else None,
                     "base_of": s.base_of, "timings_seconds": s.timings or None} for s in systems],
        "leaderboards": {b.test_set: {"role": b.role, "absent": b.absent, "ranking": [
            {"rank": i, "system": e.system.label, "wer": e.wer.to_dict(), "cer": e.scores["cer"]["rate"],
             "counts": {k: e.scores["wer"][k] for k in ("sub", "dele", "ins", "ref", "errors")},
             "vs_best": e.vs_best.to_dict() if e.vs_best else None}
            for i, e in enumerate(b.entries, start=1)]} for b in boards},
        "pairs": [p.to_dict() for p in paired],
        "forgetting": {k: v.to_dict() for k, v in fs.items()},
        "plots": {"wer_vs_params": f"plots/{plot.name}"} if plot else {}})
    text = [line for b in boards for line in board_lines(b, cfg.level)]
    return out_dir / "COMPARE.md", "\n".join(text + (pair_lines(paired, cfg.level) if paired else []))
