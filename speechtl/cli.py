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
    opts = DecodeOptions(batch_size=args.batch_size, num_beams=args.beams, normalizer=args.normalizer)
    res = evaluate_manifest(args.model, lambda: load_model(args.model, device=args.device), utts,
                            Path(args.manifest), out, opts, force=args.force)
    print(f"{out}: WER {100 * res['wer']['rate']:.2f}%  CER {100 * res['cer']['rate']:.2f}%  "
          f"({res['utterances']} utterances)")
    return 0


def dev_evaluator(utts, manifest: Path, out_dir: Path, batch_size: int, max_utts: int = 0):
    """A closure that decodes the dev set and returns its WER; adapt calls it without knowing evaluate."""
    from speechtl.evaluate.decode import DecodeOptions, score_hypotheses, transcribe_utterances

    subset = utts[:max_utts] if max_utts else utts

    def evaluate(model) -> float:
        hyps = transcribe_utterances(model, subset, DecodeOptions(batch_size=batch_size), desc="dev")
        return score_hypotheses(subset, hyps)[1].wer.rate

    return evaluate


def cmd_train(args: argparse.Namespace) -> int:
    from speechtl.adapt.config import load_config
    from speechtl.adapt.trainer import train
    from speechtl.data.manifest import read_manifest
    from speechtl.io import setup_logging
    from speechtl.models import load_model

    out = Path(args.out)
    cfg = load_config(args.config, args.set)
    setup_logging(out / "train.log")
    train_utts = read_manifest(args.train)
    dev_utts = read_manifest(args.dev) if args.dev else None
    ckpt = out / "checkpoint"
    model = load_model(args.model)
    if ckpt.is_dir():
        LOG.info("found %s: the run resumes there", ckpt)
    evaluator = None
    if dev_utts is not None:
        evaluator = dev_evaluator(dev_utts, Path(args.dev), out, cfg.eval_batch_size, cfg.eval_max_utts)
    summary = train(model, train_utts, out, cfg, evaluator)
    best = summary.get("best_dev_wer")
    print(f"{out}: trained {summary['steps']} steps ({summary['trainable_parameters']:,} of "
          f"{summary['total_parameters']:,} parameters)" + (f", best dev WER {100 * best:.2f}%" if best is not None
                                                             else ""))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from speechtl.data.corpora import CORPORA
    from speechtl.io import setup_logging

    out = Path(args.out)
    setup_logging(out / "prepare.log")
    manifests = CORPORA[args.corpus].prepare(args)
    for name, path in manifests.items():
        print(f"{name}: {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from speechtl.report.results import write_report

    roles = dict(r.split("=", 1) for r in args.role)
    path, table = write_report(Path(args.out), args.title, Path(args.before), Path(args.after),
                               Path(args.train) if args.train else None,
                               Path(args.timings) if args.timings else None, args.command, roles, args.note)
    print(table)
    print(f"\nwrote {path}")
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

    t = sub.add_parser("train", help="adapt a model on a training manifest; resumes a killed run in --out")
    t.add_argument("--model", required=True, help="hub id, checkpoint dir, experiment dir, or CTranslate2 dir")
    t.add_argument("--train", required=True, help="training manifest")
    t.add_argument("--dev", default=None, help="dev manifest: WER every eval_every steps, best model kept")
    t.add_argument("--out", required=True, help="experiment dir")
    t.add_argument("--config", default=None, help="YAML training config (see speechtl.adapt.config.TrainConfig)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.set_defaults(func=cmd_train)

    from speechtl.data.corpora import CORPORA

    pr = sub.add_parser("prepare", help="prepare a corpus into manifests under --out")
    corpora = pr.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    for name, corpus in CORPORA.items():
        c = corpora.add_parser(name, help=corpus.help, description=corpus.help)
        c.add_argument("--out", required=True, help="output dir for the manifests (nothing is written elsewhere)")
        corpus.add_arguments(c)
    pr.set_defaults(func=cmd_prepare)

    r = sub.add_parser("report", help="before/after tables, RESULTS.md and results.json")
    r.add_argument("--before", required=True, help="dir of <test set>/scores.json from the base model")
    r.add_argument("--after", required=True, help="dir of <test set>/scores.json from the adapted model")
    r.add_argument("--train", default=None, help="training experiment dir (for its summary.json)")
    r.add_argument("--timings", default=None, help="stage<TAB>seconds file written by the recipe")
    r.add_argument("--command", default=None, help="the command that produced the run, quoted in the report")
    r.add_argument("--role", action="append", default=[], metavar="SET=ROLE", help="e.g. test_us=source")
    r.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    r.add_argument("--title", default="Results")
    r.add_argument("--out", required=True, help="dir for RESULTS.md and results.json")
    r.set_defaults(func=cmd_report)
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
