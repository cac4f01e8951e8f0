"""Which margin should Whisper's dynamic audio context keep after the speech? WER and decode time per margin.

    nice -n 10 python benchmarks/audio_context.py [--n 100 60] [--margins 0,0.5,1,2] [--batch-size 16]
    python benchmarks/audio_context.py --n 4 4 --margins 0,1 --out /tmp/audio_context  # smoke

At ``audio_context: dynamic`` a batch to decode is padded to its longest utterance plus a margin
(``audio_context_decode_margin``, else ``audio_context_margin``) instead of to 30 s. Whisper was trained on 30 s
windows, so a context cut at the end of the speech can make the *pretrained* model stop early or hallucinate
(whisper.cpp users warn the same for ``-ac``); a margin costs encoder time. This decodes the same utterances with
the pretrained offline tiny.en (or ``--model``) at full context and at dynamic context for each margin, through
speechtl's own decoding path (``transcribe_utterances``, greedy, length-sorted batches as ``speechtl eval`` makes
them), and reports WER (Whisper normaliser), its edit operations, decode seconds (wall, and this process's CPU
seconds, which a shared machine's other load inflates less), and how many transcripts differ from the full
context's and in which direction. Sets (default): every k-th of speechocean762's ``test_adults`` (real Mandarin-L1
read speech, with the corpus's silences around it) and of the synthetic recipe's ``test_us`` (espeak-ng, tight to
the speech). Writes ``benchmarks/results/audio_context.{json,md}``.

``--model`` takes a model adapted at dynamic context instead (an experiment's model dir): whether adapting
removes the pretrained model's need for a margin is the question that decides the training default, e.g.

    python benchmarks/audio_context.py --model EXP/encoder/train/best --manifests DATA/test_caribbean.jsonl \
        DATA/test_us.jsonl --n 60 60 --margins 0,0.5,1,2,3 --out benchmarks/results/audio_context_adapted
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = [ROOT / "recipes" / "speechocean762_english" / "exp" / "whisper_tiny_en" / "data" / "test_adults.jsonl",
             ROOT / "recipes" / "synthetic_caribbean" / "exp" / "whisper_tiny_en" / "data" / "test_us.jsonl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="openai/whisper-tiny.en",
                    help="a hub id (pretrained) or an adapted experiment's model dir (its saved context is shown)")
    ap.add_argument("--manifests", nargs="+", default=[str(m) for m in MANIFESTS])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 60], help="utterances of each manifest (evenly spread)")
    ap.add_argument("--margins", default="0,0.5,1,2",
                    help="decoding margins (s) at dynamic context (audio_context_decode_margin)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--note", default="", help="a sentence for the report (what the model is, what else ran)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audio_context"))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite OUT.md (and --note) from OUT.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.markdown_only:
        from speechtl.io import atomic_write, write_json

        result = json.loads(out.with_suffix(".json").read_text())
        result["note"] = args.note or result.get("note", "")
        write_json(out.with_suffix(".json"), result)
        with atomic_write(out.with_suffix(".md")) as f:
            f.write(markdown(result))
        return
    if len(args.n) != len(args.manifests):
        ap.error("give one --n per manifest")
    import torch

    from speechtl.data.manifest import read_manifest
    from speechtl.evaluate.decode import DecodeOptions, transcribe_utterances
    from speechtl.evaluate.evaldir import score_hypotheses
    from speechtl.io import atomic_write, environment, write_json
    from speechtl.models import load_model

    model = load_model(args.model, device="cpu")
    saved = {k: getattr(model.module.config, k, None)
             for k in ("audio_context", "audio_context_margin", "audio_context_decode_margin")}
    opts = DecodeOptions(batch_size=args.batch_size)
    settings = [("full", None)] + [("dynamic", float(m)) for m in args.margins.split(",")]
    load_before = os.getloadavg()
    sets = {}
    for manifest, n in zip(args.manifests, args.n, strict=True):
        utts = read_manifest(manifest)
        utts = utts[:: max(1, len(utts) // n)][:n]
        transcribe_utterances(model, utts[:2], opts)  # warm-up, untimed
        rows, hyps_full = {}, None
        for context, margin in settings:
            name = "full" if margin is None else f"dynamic {margin:g} s"
            margins = {} if margin is None else {"audio_context_decode_margin": margin}
            model.configure(audio_context=context, **margins)
            w0, c0 = time.perf_counter(), time.process_time()
            hyps = transcribe_utterances(model, utts, opts, desc=name)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            per_utt, scores = score_hypotheses(utts, hyps)
            errs = {r["id"]: r["sub"] + r["del"] + r["ins"] for r in per_utt}
            if hyps_full is None:
                hyps_full, errs_full = hyps, errs
            w = scores.wer
            rows[name] = {"wer": w.rate, "sub": w.sub, "del": w.dele, "ins": w.ins, "ref_words": w.ref,
                          "wall_s": wall, "cpu_s": cpu, "differ_from_full": sum(hyps[k] != hyps_full[k] for k in hyps),
                          "worse_than_full": sorted(k for k in errs if errs[k] > errs_full[k]),
                          "better_than_full": sorted(k for k in errs if errs[k] < errs_full[k]), "hyps": hyps}
            print(f"{Path(manifest).name} {name}: WER {100 * w.rate:.1f}% in {wall:.1f} s", flush=True)
        sets[os.path.relpath(manifest, ROOT)] = {"utterances": len(utts), "seconds": sum(u.duration for u in utts),
                                                  "refs": {u.id: u.text for u in utts}, "settings": rows}
    result = {"model": args.model, "saved_settings": saved, "note": args.note, "batch_size": args.batch_size,
              "sets": sets,
              "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d"),
              "environment": environment()}
    write_json(out.with_suffix(".json"), result)
    with atomic_write(out.with_suffix(".md")) as f:
        f.write(markdown(result))
    print(out.with_suffix(".md").read_text())


def markdown(r: dict) -> str:
    env, saved = r["environment"], r.get("saved_settings", {"audio_context": None})
    who = (f"pretrained {r['model']} (offline copy), not adapted" if saved["audio_context"] is None else
           f"adapted model `{r['model']}` (saved with audio_context {saved['audio_context']}, margin "
           f"{saved['audio_context_margin']} s, decoding margin {saved.get('audio_context_decode_margin')} s)")
    lines = [
        "# Whisper's dynamic audio context: which margin?",
        "",
        f"Written by `python benchmarks/audio_context.py` on {r['date']}: {who}, greedy, speechtl's decoding path in "
        f"length-sorted batches of {r['batch_size']} (at dynamic "
        "context a batch is padded to its longest utterance plus the margin), on CPU "
        f"({r['threads']} threads of {r['cpu_count']} cores); speechtl {(env.get('speechtl_git') or '?')[:10]}. "
        f"The machine is shared (load average {r['load_average_before'][0]} before, "
        f"{r['load_average_after'][0]} after): CPU seconds carry the comparison, wall seconds are noisy. "
        "'worse'/'better': utterances with more/fewer word errors than at full context."
        + (f" {r['note']}" if r.get("note") else ""),
    ]
    for name, s in r["sets"].items():
        full = s["settings"]["full"]
        lines += ["", f"## {name}: {s['utterances']} utterances, {s['seconds']:.0f} s of audio", "",
                  "| context | WER | sub | del | ins | wall s | CPU s | speed-up (CPU) | differ from full | worse "
                  "| better |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for k, v in s["settings"].items():
            lines.append(f"| {k} | {100 * v['wer']:.1f}% | {v['sub']} | {v['del']} | {v['ins']} | {v['wall_s']:.1f} | "
                         f"{v['cpu_s']:.1f} | {full['cpu_s'] / v['cpu_s']:.2f}x | {v['differ_from_full']} | "
                         f"{len(v['worse_than_full'])} | {len(v['better_than_full'])} |")
        tight = list(s["settings"])[1]  # the smallest margin: where cutting close shows first
        worse = s["settings"][tight]["worse_than_full"][:6]
        if worse:
            lines += ["", f"Utterances worse at {tight} than at full context (up to 6):", "",
                      f"| id | reference | full | {tight} |", "|---|---|---|---|",
                      *(f"| {k} | {s['refs'][k]} | {full['hyps'][k]} | {s['settings'][tight]['hyps'][k]} |"
                        for k in worse)]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
