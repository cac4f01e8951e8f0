"""What does distillation to the base model cost? Step time and peak memory with and without it.

    nice -n 15 python benchmarks/distill_cost.py [--n 8] [--batch-size 2] [--steps 4] [--weight 0.5]

On real accented speech (the first ``--n`` utterances of the speechocean762 subset beside the checkout),
Whisper tiny.en (the offline copy, 39 M parameters) at ``audio_context: dynamic`` (so a CPU step takes
seconds, not half a minute) trains ``--steps`` steps, after two warm-up steps, with the trainer's own
:class:`~speechtl.adapt.distill.Objective` (forward, backward, AdamW), for four settings:

  * ``lora`` without and with distillation (teacher: the same module with the adapter switched off);
  * ``full`` without and with distillation (teacher: a frozen copy of the base weights).

Each setting runs in a fresh child process, so its peak resident memory (``ru_maxrss``) is its own; the
memory figures are that peak and the rise above the process's memory once the model is loaded. Times are
the median step, in CPU seconds of the child (what other work on a shared machine cannot inflate) and
wall seconds. The settings run in order lora-off, lora-on, full-off, full-on, twice, best of two
kept, and each ratio is against its peer in the same run. Writes ``benchmarks/results/distill_cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from _child import run_child

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [("lora", False), ("lora", True), ("full", False), ("full", True)]


def rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> None:
    """One setting in this process: print a JSON line of its timings and memory."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from loader_speed import read_corpus

    from speechtl.adapt.config import TrainConfig
    from speechtl.adapt.distill import Objective
    from speechtl.adapt.methods import apply_method, prepare_base
    from speechtl.features.audio import load_utterance
    from speechtl.models import load_model

    torch.manual_seed(0)
    utts = read_corpus(args.n)
    model = load_model("openai/whisper-tiny.en", device="cpu")
    model.configure(audio_context="dynamic")
    cfg = TrainConfig(method=args.method, distill_weight=args.weight if args.distill else 0.0,
                      batch_size=args.batch_size)
    prepare_base(model, cfg)
    apply_method(model, cfg)
    objective = Objective.build(model, cfg, "kept", torch.device("cpu"))
    groups = [utts[i:i + args.batch_size] for i in range(0, len(utts), args.batch_size)]
    batches = [model.collate([load_utterance(u, 16000) for u in g], [u.text for u in g]) for g in groups]
    loaded = rss_now()
    opt = torch.optim.AdamW([p for p in model.module.parameters() if p.requires_grad], lr=1e-5)
    model.module.train()
    runs = []
    for step in range(args.steps + 2):
        batch = batches[step % len(batches)]
        w0, c0 = time.perf_counter(), time.process_time()
        terms = objective(batch, model.module)
        terms.total(cfg.distill_weight, [1.0] * len(terms.counts())).backward()
        opt.step()
        opt.zero_grad()
        runs.append((time.perf_counter() - w0, time.process_time() - c0))
    runs = runs[2:]
    print(json.dumps({"method": args.method, "distill": args.distill, "teacher_bytes": objective.teacher_bytes,
                      "step_cpu_s": float(np.median([r[1] for r in runs])),
                      "step_wall_s": float(np.median([r[0] for r in runs])),
                      "rss_loaded_bytes": loaded, "rss_peak_bytes": rss_peak(),
                      "trainable_parameters": model.num_parameters(trainable_only=True),
                      "parameters": model.num_parameters()}))


def distill_cell(args: argparse.Namespace, method: str, distill: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--method", method, "--n", str(args.n), "--batch-size",
           str(args.batch_size), "--steps", str(args.steps), "--weight", str(args.weight)]
    if distill:
        cmd.append("--distill")
    return run_child(cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="utterances of speechocean762 train")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setting (after two warm-up steps)")
    ap.add_argument("--weight", type=float, default=0.5, help="distill_weight when distilling")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the four settings, best kept")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distill_cost"))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite OUT.md from OUT.json, timing nothing")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="lora", help=argparse.SUPPRESS)
    ap.add_argument("--distill", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.markdown_only:
        out = Path(args.out)
        write_markdown(out.with_suffix(".md"), json.loads(out.with_suffix(".json").read_text()))
        return
    from speechtl.io import environment, write_json

    load_before = os.getloadavg()
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for method, distill in SETTINGS:
            key = f"{method}, {'distill' if distill else 'plain'}"
            print(f"[{key}]", flush=True)
            r = distill_cell(args, method, distill)
            if key not in best or r["step_cpu_s"] < best[key]["step_cpu_s"]:
                best[key] = r
    result = {"n": args.n, "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
              "distill_weight": args.weight, "settings": best, "cpu_count": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d"),
              "environment": environment()}
    write_json(Path(args.out).with_suffix(".json"), result)
    write_markdown(Path(args.out).with_suffix(".md"), result)
    print(Path(args.out).with_suffix(".md").read_text())


def write_markdown(path: Path, r: dict) -> None:
    s = r["settings"]
    mib = 2 ** 20
    rows, shows = [], []
    for method in ("lora", "full"):
        plain, dist = s[f"{method}, plain"], s[f"{method}, distill"]
        for key, m in ((f"{method}, plain", plain), (f"{method}, distill", dist)):
            rise = m["rss_peak_bytes"] - m["rss_loaded_bytes"]
            rows.append(f"| {key} | {m['trainable_parameters'] / 1e6:.2f} M | {m['step_cpu_s']:.2f} | "
                        f"{m['step_wall_s']:.2f} | {m['rss_peak_bytes'] / mib:.0f} | {rise / mib:.0f} | "
                        f"{m['teacher_bytes'] / mib:.0f} |")
        shows.append(f"- **{method}**: distillation makes a step {dist['step_cpu_s'] / plain['step_cpu_s']:.2f}x "
                     f"the CPU time ({dist['step_wall_s'] / plain['step_wall_s']:.2f}x wall) and the peak resident "
                     f"memory {dist['rss_peak_bytes'] / plain['rss_peak_bytes']:.2f}x; teacher weights held "
                     f"beside the model: {dist['teacher_bytes'] / mib:.0f} MiB.")
    env = r["environment"]
    lines = [
        "# The cost of distillation to the base model",
        "",
        f"Written by `nice -n 15 python benchmarks/distill_cost.py` on {r['date']}: Whisper tiny.en (offline copy) "
        f"at `audio_context: dynamic`, {r['n']} real speechocean762 train utterances in batches of "
        f"{r['batch_size']}, distill_weight {r['distill_weight']}, on CPU ({r['cpu_count']} cores); speechtl "
        f"{(env.get('speechtl_git') or '?')[:10]}. Each setting ran in its own process; a step (forward, "
        f"backward, AdamW, through speechtl.adapt.distill.Objective as the trainer runs it) is the median of "
        f"{r['steps']} after two warm-up steps, best of {r['rounds']} rounds with the settings interleaved. The "
        f"machine is shared (load average {r['load_average_before'][0]} before, {r['load_average_after'][0]} "
        "after): CPU seconds, this process's own, carry the comparison; wall seconds are noisy.",
        "",
        "| setting | trainable | step CPU s | step wall s | peak RSS MiB | rise over loaded MiB | teacher MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "## What it shows",
        "",
        *shows,
        "",
        "The teacher adds one forward pass without gradients (no activations kept for a backward) to a step of "
        "forward, backward and optimiser update: a forward is about a third of forward and backward, and without "
        "gradients it is cheaper still, so about a fifth more time. LoRA's teacher "
        "is the model itself with its adapter off, so it holds no weights of its own (its peak memory moved by "
        "noise only); full fine-tuning keeps a frozen copy of the base "
        f"(here {s['full, distill']['teacher_bytes'] / mib:.0f} MiB, fp32), which for whisper-large-v3 (1.55 B "
        "parameters, fp32) would be 6.2 GB more on the GPU. The copy is made before the model counts as loaded, "
        "so for full + distill the rise column leaves it out; the peak column has it.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
