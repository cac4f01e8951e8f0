"""The ``speechtl`` command: each subcommand parses its options and makes one call into a room."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from speechtl import __version__

LOG = logging.getLogger("speechtl.cli")


def cmd_eval(args: argparse.Namespace) -> int:
    from speechtl.data.manifest import read_manifest
    from speechtl.evaluate.decode import DecodeOptions, evaluate_manifest
    from speechtl.io import setup_logging
    from speechtl.models import load_model

    out = Path(args.out)
    setup_logging(out / "eval.log")
    utts = read_manifest(args.manifest)
    if args.max_duration:
        kept = [u for u in utts if u.duration <= args.max_duration]
        LOG.warning("--max-duration %.1f dropped %d of %d utterances", args.max_duration, len(utts) - len(kept),
                    len(utts))
        utts = kept
    model = load_model(args.model, device=args.device)
    opts = DecodeOptions(batch_size=args.batch_size, num_beams=args.beams, normalizer=args.normalizer)
    res = evaluate_manifest(model, utts, Path(args.manifest), out, opts, force=args.force)
    print(f"{out}: WER {100 * res['wer']['rate']:.2f}%  CER {100 * res['cer']['rate']:.2f}%  "
          f"({res['utterances']} utterances)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speechtl", description=__doc__)
    p.add_argument("--version", action="version", version=f"speechtl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="transcribe a manifest and score WER/CER (per speaker and accent)")
    e.add_argument("--model", required=True, help="hub id, checkpoint dir, experiment dir, or CTranslate2 dir")
    e.add_argument("--manifest", required=True, help="JSON Lines manifest to transcribe")
    e.add_argument("--out", required=True, help="output dir: hyp.jsonl, scores.json, per_utt, wer")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--beams", type=int, default=1, help="beam size (1: greedy)")
    e.add_argument("--normalizer", default="whisper", choices=["whisper", "none"])
    e.add_argument("--max-duration", type=float, default=None, help="drop (and log) longer utterances")
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    e.add_argument("--force", action="store_true", help="decode again even if scores.json is up to date")
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "device", "unset") is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    from speechtl.data.manifest import ManifestError
    from speechtl.features.audio import AudioError
    from speechtl.models.base import ModelLoadError

    try:
        return args.func(args)
    except (ManifestError, AudioError, ModelLoadError, ValueError, FileNotFoundError) as e:
        print(f"speechtl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
