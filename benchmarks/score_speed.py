"""How long scoring 100,000 utterances with speaker-bootstrap intervals takes, phase by phase.

    python benchmarks/score_speed.py [--n 100000] [--speakers 1000] [--jobs 2] [--n-boot 1000]

Fabricates a reference manifest of ``--n`` utterances (the committed synthetic_caribbean sentences,
``--speakers`` speakers over 5 accents) and two hypothesis files (a "before" and an "after" system,
errors injected at a per-speaker rate), then times, in one process:
  * ``speechtl score`` on the Kaldi-text hypotheses, end to end (``score_external``), split into
    reading + id matching, normalisation + counts + alignments (``score_hypotheses`` and the per_utt/ops
    alignments, in ``score_parallel``), the bootstrap intervals, and writing the files; once serial and
    once with ``--jobs`` processes;
  * the statistics alone on 100k scored rows: WER interval over speakers, the paired before/after
    bootstrap (corpus, per accent, and per speaker over utterances), as ``speechtl report`` runs them;
  * the report's whole per-set analysis (``analyse_set``: the statistics plus alignments for error
    analysis).
Writes ``benchmarks/results/score_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from speechtl.data.manifest import read_manifest
from speechtl.evaluate.evaldir import EvalDir, score_parallel
from speechtl.evaluate.external import match_ids, read_hypotheses
from speechtl.evaluate.stats import BootstrapConfig, bootstrap_rate, paired_bootstrap, word_blocks
from speechtl.io import atomic_write, environment, write_json
from speechtl.report.analyse import analyse_set
from speechtl.report.loading import load_eval_set

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "data_manifests" / "synthetic_caribbean" / "sentences.txt"
ACCENTS = ("caribbean", "jamaican", "trinidadian", "bajan", "us")


def corrupt(words: list[str], rate: float, vocab: list[str], rng: random.Random) -> str:
    out = []
    for w in words:
        x = rng.random()
        if x < rate:
            out.append(rng.choice(vocab))
        elif x >= rate * 4 / 3:
            out.append(w)
        if rng.random() < rate / 4:
            out.append(rng.choice(vocab))
    return " ".join(out)


def fabricate(n: int, speakers: int, workdir: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """A manifest and two Kaldi-text hypothesis files; the after system is better for most speakers."""
    rng = random.Random(seed)
    sentences = SENTENCES.read_text(encoding="utf-8").splitlines()
    vocab = sorted({w.strip(".,?!").lower() for s in sentences for w in s.split()})
    manifest, before, after = workdir / "test_bench.jsonl", workdir / "before.txt", workdir / "after.txt"
    rate = {s: rng.uniform(0.05, 0.4) for s in range(speakers)}
    with open(manifest, "w") as m, open(before, "w") as b, open(after, "w") as a:
        for i in range(n):
            spk = i % speakers
            text = sentences[rng.randrange(len(sentences))]
            uid = f"spk{spk:04d}-{i:06d}"
            m.write(json.dumps({"id": uid, "audio": f"{uid}.wav", "duration": 3.0, "text": text,
                                "speaker": f"spk{spk:04d}", "accent": ACCENTS[spk % len(ACCENTS)]}) + "\n")
            words = text.lower().strip(".?!").split()
            b.write(f"{uid} {corrupt(words, rate[spk], vocab, rng)}\n")
            a.write(f"{uid} {corrupt(words, rate[spk] * rng.uniform(0.5, 1.05), vocab, rng)}\n")
    return manifest, before, after


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def score_phases(manifest: Path, hyp: Path, out: Path, jobs: int, cfg: BootstrapConfig) -> dict[str, float]:
    """``score_external``'s steps, each timed; the intervals are timed apart from the file writing."""
    t = {}
    t["read_and_match"], (utts, hyps) = timed(lambda: (u := read_manifest(manifest, check_audio=False),
                                                       match_ids(u, read_hypotheses(hyp), manifest, hyp)))
    t["normalise_align_count"], scored = timed(score_parallel, utts, hyps, "whisper", jobs)
    t["bootstrap_intervals"], _ = timed(bootstrap_rate, word_blocks(scored.rows), cfg.derive(out.name, "wer"))
    t["write_files_with_intervals"], _ = timed(EvalDir(out).write, scored,
                                               {"model": str(hyp), "manifest": str(manifest)}, cfg)
    t["total"] = sum(t.values()) - t["bootstrap_intervals"]  # EvalDir.write computes the intervals again
    return {k: round(v, 3) for k, v in t.items()}


def stats_only(before_rows: list[dict], after_rows: list[dict], cfg: BootstrapConfig) -> dict[str, float]:
    t = {}
    t["wer_interval_over_speakers"], _ = timed(lambda: bootstrap_rate(word_blocks(after_rows), cfg))
    t["paired_corpus"], _ = timed(lambda: paired_bootstrap(word_blocks(before_rows), word_blocks(after_rows), cfg))

    def per_group(key: str | None, group: str) -> None:
        """As the report does it: rows grouped once, then one paired bootstrap per group."""
        by_b: dict[str, list[dict]] = defaultdict(list)
        by_a: dict[str, list[dict]] = defaultdict(list)
        for rb, ra in zip(before_rows, after_rows, strict=True):
            by_b[rb[group]].append(rb)
            by_a[ra[group]].append(ra)
        for g in sorted(by_b):
            paired_bootstrap(word_blocks(by_b[g], key), word_blocks(by_a[g], key), cfg.derive(g))

    t["paired_per_accent"], _ = timed(per_group, "speaker", "accent")
    t["paired_per_speaker_over_utterances"], _ = timed(per_group, None, "speaker")
    return {k: round(v, 3) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--speakers", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "score_speed"))
    args = ap.parse_args()
    cfg = BootstrapConfig(n_boot=args.n_boot, seed=0)
    load_start = os.getloadavg()  # other work on the machine inflates the timings; recorded, not hidden
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t_fab, (manifest, before, after) = timed(fabricate, args.n, args.speakers, work)
        warm = read_manifest(manifest, check_audio=False)[:20]  # imports and the normaliser's tables, untimed
        score_parallel(warm, {u.id: u.text for u in warm}, "whisper", 1)
        serial = score_phases(manifest, before, work / "before" / "test_bench", 1, cfg)
        parallel = score_phases(manifest, after, work / "after" / "test_bench", args.jobs, cfg)
        b, a = load_eval_set(work / "before" / "test_bench"), load_eval_set(work / "after" / "test_bench")
        stats = stats_only(b.rows, a.rows, cfg)
        t_analyse, analysis = timed(analyse_set, "test_bench", b, a, cfg)
    result = {"utterances": args.n, "speakers": args.speakers, "accents": len(ACCENTS), "n_boot": args.n_boot,
              "jobs": args.jobs, "fabricate_seconds": round(t_fab, 2), "score_serial_seconds": serial,
              f"score_jobs{args.jobs}_seconds": parallel, "statistics_only_seconds": stats,
              "report_analyse_set_seconds": round(t_analyse, 3),
              "wer_before": analysis.wer.before.to_dict(), "wer_after": analysis.wer.after.to_dict(),
              "p_after_better": analysis.wer.p_better,
              "load_average_1min": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)},
              "environment": environment()}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    env = result["environment"]
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(f"# Scoring speed: {args.n:,} utterances, {args.speakers:,} speakers, {args.n_boot} bootstrap "
                f"replicates\n\nWritten by `python benchmarks/score_speed.py` on {env['cpu_count']} CPU core(s), "
                f"{env['platform']}, Python {env['python']}, numpy {env['packages']['numpy']}; 1-minute load "
                f"average {result['load_average_1min']['start']} at the start, {result['load_average_1min']['end']} "
                "at the end (at the start, anything well above 0 is other work sharing the cores; at the end the "
                "benchmark's own processes count too).\n\n"
                "| phase | serial (s) | " + f"--jobs {args.jobs} (s) |\n|---|---:|---:|\n")
        for k in serial:
            f.write(f"| score: {k.replace('_', ' ')} | {serial[k]:.2f} | {parallel[k]:.2f} |\n")
        f.write("\n| statistics alone, on the scored rows | seconds |\n|---|---:|\n")
        for k, v in stats.items():
            f.write(f"| {k.replace('_', ' ')} | {v:.3f} |\n")
        f.write(f"| report's whole per-set analysis (statistics + alignments for error analysis) | {t_analyse:.2f} |\n")
        f.write(f"\nWER before {100 * analysis.wer.before.value:.2f}% [{100 * analysis.wer.before.low:.2f}, "
                f"{100 * analysis.wer.before.high:.2f}], after {100 * analysis.wer.after.value:.2f}% "
                f"[{100 * analysis.wer.after.low:.2f}, {100 * analysis.wer.after.high:.2f}], P(after better) "
                f"{analysis.wer.p_better:.3f}.\n")
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=2))


if __name__ == "__main__":
    main()
