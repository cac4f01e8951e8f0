"""How much faster does a training step run at Whisper's dynamic audio context than at the full 30 s?

    nice -n 10 python benchmarks/train_speed.py [--manifest M] [--batches 3] [--steps 3] [--margin 1.0] [--threads N]
    python benchmarks/train_speed.py --batches 1 --steps 1 --methods lora --out /tmp/train_speed  # smoke

Issue 11's target is a step at ``audio_context: dynamic`` at least 5x faster than at ``full`` for every
method. For each method (full, freeze, lora, adapters: the synthetic recipe's own training confs, so
freeze is the encoder-only run) a fresh child process loads Whisper (offline tiny.en, or ``--scale`` for a
randomly initialised larger config with the same tokenizer: step time does not depend on the weights'
values), applies the method through the trainer's own code (``prepare_base``, ``apply_method``,
``Objective``, ``Batches`` over ``rank_batches``, ``configure(audio_context=…)`` before collating) and
times steps of forward, backward, gradient clipping and AdamW on the same length-grouped batches of the
manifest (default: the synthetic recipe's train set) at both contexts, steps alternating between them so
that a shared machine's changing load falls on both alike. Each context first runs one step on every
batch, untimed (under torch's FlopCounterMode, to count each batch's model FLOPs), with its peak
memory measured from a reset: VmHWM on CPU (``ru_maxrss`` can't be reset), CUDA's peak allocation on a
GPU; the time is the median of ``--steps`` more. On a GPU the step runs in bf16 autocast, as the
trainer's ``mixed_precision: auto`` does, and samples/s and MFU (counted FLOPs over the GPU's dense bf16
peak) are reported; on CPU MFU is not measured. Times are wall seconds and the child's CPU seconds; the
speed-up ratios are given for both. Writes ``benchmarks/results/train_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

from _child import run_child

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "recipes" / "synthetic_caribbean" / "exp" / "whisper_tiny_en" / "data" / "train.jsonl"
CONFS = ROOT / "recipes" / "synthetic_caribbean" / "conf"
METHODS = {"full": "train_full.yaml", "freeze": "train_encoder.yaml", "lora": "train_lora.yaml",
           "adapters": "train_adapters.yaml"}
CONTEXTS = ("full", "dynamic")
#: Whisper sizes for ``--scale`` (d_model, layers per stack, heads, feed-forward width), from the released configs.
SCALES = {"base": (512, 6, 8, 2048), "small": (768, 12, 12, 3072), "medium": (1024, 24, 16, 4096)}
#: Dense bf16 peak FLOP/s by GPU name (vendor data sheets), for MFU; ``--peak-tflops`` overrides.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


def rss_bytes() -> tuple[int, int]:
    """(now, peak since the last :func:`reset_peak`) resident memory of this process (Linux's VmRSS, VmHWM)."""
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) * 1024 for k in ("VmRSS", "VmHWM"))


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS


def build_model(scale: str, device: str):
    """Offline tiny.en, or a random-weight Whisper of ``scale``'s dimensions with tiny.en's tokenizer."""
    from speechtl.models import load_model

    model = load_model("openai/whisper-tiny.en", device="cpu")
    if scale != "tiny":
        from transformers import WhisperForConditionalGeneration

        from speechtl.models.whisper import WhisperASR

        d, layers, heads, ffn = SCALES[scale]
        config = model.module.config.to_dict()
        config.update(d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads,
                      decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn)
        module = WhisperForConditionalGeneration(type(model.module.config).from_dict(config))
        module.generation_config = model.module.generation_config
        model = WhisperASR(module, model.feature_extractor, model.tokenizer, source=f"random whisper-{scale}.en")
    model.to(device)
    return model


def child(args: argparse.Namespace) -> None:
    """One method in this process, both contexts: print a JSON line of each context's timings and memory.

    The contexts are timed in the same process with steps alternating (dynamic, full, full, dynamic, …), so
    a shared machine's changing load falls on both alike. Dynamic runs first, with a step on every batch
    before any full-context step, and each context's peak memory is measured from a reset of the peak
    (Linux's VmHWM, or CUDA's peak statistics), so each is its own: the model, the optimizer's state and
    that context's activations.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from speechtl.adapt.config import load_config
    from speechtl.adapt.distill import Objective
    from speechtl.adapt.methods import apply_method, prepare_base
    from speechtl.adapt.trainer import Batches, rank_batches, styled_targets
    from speechtl.data.manifest import read_manifest

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(Path(args.conf_dir) / METHODS[args.method])
    torch.manual_seed(cfg.seed)
    model = build_model(args.scale, device)
    prepare_base(model, cfg)
    model.configure(audio_context="dynamic", audio_context_margin=args.margin)
    apply_method(model, cfg)
    objective = Objective.build(model, cfg, "kept", torch.device(device))
    utts = styled_targets(model, read_manifest(args.manifest), cfg.target_style)
    chosen = rank_batches([u.duration for u in utts], args.batch_size, 1, 0, cfg.seed)[:args.batches]
    batches = {}
    for context in CONTEXTS:  # as the trainer applies model_settings: features are cut when collated
        model.configure(audio_context=context, audio_context_margin=args.margin)
        data = Batches(model, utts, chosen)
        batches[context] = [{k: v.to(device) for k, v in data[i].items()} for i in range(len(data))]
    params = [p for p in model.module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=cfg.adam_betas)
    model.module.train()

    def step(batch: dict) -> tuple[float, float, float]:
        """(loss, wall s, CPU s) of forward, backward, clipping and AdamW, as the trainer's loop does them."""
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            terms = objective(batch, model.module)
        terms.total(cfg.distill_weight, [1.0] * len(terms.counts())).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad()
        loss = terms.loss.item()  # .item() waits for the GPU
        return loss, time.perf_counter() - w0, time.process_time() - c0

    def memory() -> int:
        return torch.cuda.max_memory_allocated() if device == "cuda" else rss_bytes()[1]

    model.module.eval()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        loss_before = {c: objective(batches[c][0], model.module).loss.item() for c in CONTEXTS}
    model.module.train()
    cells = {}
    for context in ("dynamic", "full"):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak()
        loaded = torch.cuda.memory_allocated() if device == "cuda" else rss_bytes()[0]
        flops = []
        for b in batches[context]:  # every batch once, untimed: warm-up, the peak, and each batch's FLOPs
            with FlopCounterMode(display=False) as counter:
                step(b)
            flops.append(counter.get_total_flops())
        cells[context] = {
            "method": args.method, "context": context, "device": device, "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
            "mel_frames": [b["input_features"].shape[-1] for b in batches[context]],
            "label_tokens": [b["labels"].shape[-1] for b in batches[context]],
            "durations_max": [max(utts[j].duration for j in b) for b in chosen],
            "flops_per_batch": flops, "loss_before": loss_before[context],
            "memory_loaded_bytes": loaded, "memory_peak_bytes": memory(),
            "trainable_parameters": model.num_parameters(trainable_only=True), "parameters": model.num_parameters()}
    runs: dict[str, list[tuple[float, float]]] = {c: [] for c in CONTEXTS}
    for i in range(args.steps):
        for context in (CONTEXTS if i % 2 else CONTEXTS[::-1]):
            runs[context].append(step(batches[context][i % len(chosen)])[1:])
    for context, cell in cells.items():
        walls = [r[0] for r in runs[context]]
        cell.update(step_wall_s=statistics.median(walls), step_cpu_s=statistics.median(r[1] for r in runs[context]),
                    steps=runs[context], flops=statistics.mean(cell["flops_per_batch"]),
                    flops_per_s=statistics.median(cell["flops_per_batch"][i % len(chosen)] / w
                                                  for i, w in enumerate(walls)))
    print(json.dumps(cells))


def method_cell(args: argparse.Namespace, method: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--method", method, "--manifest", args.manifest,
           "--conf-dir", args.conf_dir, "--batches", str(args.batches), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--margin", str(args.margin), "--scale", args.scale,
           "--threads", str(args.threads)]
    return run_child(cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default=str(MANIFEST), help="training manifest whose batches are timed")
    ap.add_argument("--conf-dir", default=str(CONFS), help="dir of the train_*.yaml confs of the four methods")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--batches", type=int, default=3, help="length-grouped batches of the manifest, cycled")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per cell, after one warm-up step")
    ap.add_argument("--margin", type=float, default=1.0, help="audio_context_margin (s) at dynamic context")
    ap.add_argument("--scale", default="tiny", choices=["tiny", *SCALES],
                    help="tiny: the offline tiny.en; else a random-weight Whisper of that size")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default). On a shared machine use the cores really free: "
                         "threads outnumbering them spin at every barrier, and small (dynamic) steps suffer most")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="GPU dense bf16 peak for MFU (default: by name)")
    ap.add_argument("--note", default="", help="a sentence for the report: why these threads, what else ran")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_speed"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="full", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if not Path(args.manifest).is_file():
        ap.error(f"{args.manifest}: no such manifest (`make recipe` writes the default in its stage 0)")
    from speechtl.io import environment, write_json

    load_before = os.getloadavg()
    cells = {}
    for method in args.methods.split(","):
        print(f"[{method}]", flush=True)
        for context, cell in method_cell(args, method).items():
            cells[f"{method}/{context}"] = cell
    gpu = next(iter(cells.values()))["gpu"]
    peak = args.peak_tflops * 1e12 or next((v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)
    for c in cells.values():
        if c["device"] == "cuda":
            c["samples_per_s"] = args.batch_size / c["step_wall_s"]
            c["mfu"] = c["flops_per_s"] / peak if peak else None
    result = {"manifest": os.path.relpath(args.manifest, ROOT), "batches": args.batches, "batch_size": args.batch_size,
              "steps": args.steps, "margin_s": args.margin, "threads": args.threads, "note": args.note,
              "scale": args.scale, "peak_flops": peak, "cells": cells,
              "cpu_count": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d"),
              "environment": environment()}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    from speechtl.io import atomic_write

    with atomic_write(out.with_suffix(".md")) as f:
        f.write(markdown(result))
    print(out.with_suffix(".md").read_text())


def markdown(r: dict) -> str:
    cells, mib = r["cells"], 2 ** 20
    methods = list(dict.fromkeys(k.split("/")[0] for k in cells))
    gpu = next(iter(cells.values()))["device"] == "cuda"
    mem = "peak GPU MiB (allocated)" if gpu else "peak RSS MiB"
    extra = " samples/s | MFU |" if gpu else ""
    rows, shows = [], []
    for m in methods:
        full, dyn = cells[f"{m}/full"], cells[f"{m}/dynamic"]
        for ctx, c in (("full", full), ("dynamic", dyn)):
            frames = "/".join(str(f) for f in sorted(set(c["mel_frames"])))
            more = (f" {c['samples_per_s']:.1f} | " + (f"{100 * c['mfu']:.1f}% |" if c["mfu"] is not None else "? |")
                    if gpu else "")
            rows.append(f"| {m} | {ctx} | {c['trainable_parameters'] / 1e6:.2f} M | {frames} | "
                        f"{c['step_wall_s']:.2f} | {c['step_cpu_s']:.2f} | {c['flops'] / 1e9:.0f} | "
                        f"{c['memory_peak_bytes'] / mib:.0f} | "
                        f"{(c['memory_peak_bytes'] - c['memory_loaded_bytes']) / mib:.0f} | {c['loss_before']:.3f} |"
                        + more)
        wall, cpu = full["step_wall_s"] / dyn["step_wall_s"], full["step_cpu_s"] / dyn["step_cpu_s"]
        verdict = "met" if min(wall, cpu) >= 5 else "met in one measure only" if max(wall, cpu) >= 5 else "not met"
        shows.append(f"- **{m}**: dynamic context is **{wall:.1f}x** faster a step in wall time ({cpu:.1f}x in CPU "
                     f"time, {full['flops'] / dyn['flops']:.1f}x fewer FLOPs); peak memory "
                     f"{full['memory_peak_bytes'] / mib:.0f} -> {dyn['memory_peak_bytes'] / mib:.0f} MiB. "
                     f"Target (>= 5x): {verdict}.")
    c0, env = next(iter(cells.values())), r["environment"]
    where = (f"GPU {c0['gpu']}, bf16 autocast; MFU against {r['peak_flops'] / 1e12:.0f} TFLOP/s dense bf16"
             if gpu and r["peak_flops"] else f"GPU {c0['gpu']}, bf16 autocast (MFU: peak unknown, give --peak-tflops)"
             if gpu else f"CPU, {c0['threads']} threads of {r['cpu_count']} cores, float32; MFU not measured on CPU")
    scale = "Whisper tiny.en (offline copy)" if r["scale"] == "tiny" else f"a random-weight Whisper {r['scale']}"
    lines = [
        "# Training step time at full vs dynamic audio context",
        "",
        f"Written by `python benchmarks/train_speed.py` on {r['date']}: {scale}, {where}; speechtl "
        f"{(env.get('speechtl_git') or '?')[:10]}. The same {r['batches']} length-grouped batches of "
        f"{r['batch_size']} from `{r['manifest']}` (longest utterance per batch: "
        f"{', '.join(f'{d:.2f}' for d in c0['durations_max'])} s) for every cell, each method as its recipe conf "
        f"sets it, dynamic context with a {r['margin_s']:g} s margin. A step (forward, backward, clipping, AdamW, "
        f"through the trainer's Objective) is the median of {r['steps']}, each method in its own process with "
        "steps alternating between the contexts, after an untimed step on every batch at each context (dynamic "
        "first). Peak memory is each context's own (the peak reset before its first step): the model, AdamW's "
        "state and that context's activations; the rise is over the memory before that context's first step "
        "(at dynamic it includes AdamW's state, made then). FLOPs (mean over the batches) are counted by torch's "
        "FlopCounterMode on the untimed steps; MFU is the median over timed steps of each batch's FLOPs over its "
        "time; 'loss before' is the loss on batch 1 before any update (eval mode). The machine "
        f"is shared (load average {r['load_average_before'][0]} before, {r['load_average_after'][0]} after): "
        "wall seconds are noisy." + (f" {r['note']}" if r.get("note") else ""),
        "",
        f"| method | context | trainable | mel frames | step wall s | step CPU s | GFLOP/step | {mem} | "
        f"rise over loaded MiB | loss before |{extra}",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if gpu else ""),
        *rows,
        "",
        "## What it shows",
        "",
        *shows,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
