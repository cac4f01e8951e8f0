"""The ``speechtl`` command: each subcommand parses its options and makes one call into a room."""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

from speechtl import __version__
from speechtl.errors import SpeechtlError, UsageError

LOG = logging.getLogger("speechtl.cli")


def cmd_eval(args: argparse.Namespace) -> int:
    """One model on one or more test sets (``--manifest A --out DA --manifest B --out DB``): every manifest is read
    before anything is decoded, and the model is loaded once, when the first set needs decoding."""
    from speechtl.data.manifest import read_manifest
    from speechtl.evaluate.decode import DecodeOptions, evaluate_manifest, load_for_eval
    from speechtl.io import logging_to, setup_logging

    if len(args.manifest) != len(args.out):
        raise UsageError(f"eval: give one --out per --manifest (got {len(args.manifest)} --manifest, "
                         f"{len(args.out)} --out)")
    setup_logging()
    sets = []
    for manifest, out in zip(args.manifest, args.out, strict=True):
        utts = read_manifest(manifest)
        if args.max_duration:
            kept = [u for u in utts if u.duration <= args.max_duration]
            LOG.warning("%s: --max-duration %.1f dropped %d of %d utterances", manifest, args.max_duration,
                        len(utts) - len(kept), len(utts))
            utts = kept
        sets.append((Path(manifest), Path(out), utts))
    opts = DecodeOptions(batch_size=args.batch_size, num_beams=args.beams, normalizer=args.normalizer,
                         backend=args.backend, compute_type=args.compute_type, audio_context=args.audio_context,
                         audio_context_margin=args.audio_context_margin, gate=args.gate,
                         merge_lora=not args.no_merge, lm=args.lm, lm_alpha=args.lm_alpha, lm_beta=args.lm_beta)
    load = functools.cache(lambda: load_for_eval(args.model, opts, device=args.device))  # once, and only if needed
    for manifest, out, utts in sets:
        with logging_to(out / "eval.log"):
            res = evaluate_manifest(args.model, load, utts, manifest, out, opts, force=args.force)
        print(f"{out}: WER {100 * res['wer']['rate']:.2f}%  CER {100 * res['cer']['rate']:.2f}%  "
              f"({res['utterances']} utterances)")
    return 0


def dev_evaluator(utts, batch_size: int, max_utts: int = 0, desc: str = "dev"):
    """A closure that decodes the dev set and returns its WER; adapt calls it without knowing evaluate."""
    from speechtl.evaluate.decode import DecodeOptions, transcribe_utterances
    from speechtl.evaluate.evaldir import score_hypotheses

    subset = utts[:max_utts] if max_utts else utts

    def evaluate(model) -> float:
        hyps = transcribe_utterances(model, subset, DecodeOptions(batch_size=batch_size), desc=desc)
        return score_hypotheses(subset, hyps)[1].wer.rate

    return evaluate


def cmd_train(args: argparse.Namespace) -> int:
    from speechtl.adapt.adapters import load as load_model  # any model source, adapted experiments included
    from speechtl.adapt.config import load_config
    from speechtl.adapt.trainer import train
    from speechtl.data.manifest import read_manifest
    from speechtl.io import setup_logging

    out = Path(args.out)
    cfg = load_config(args.config, args.set)
    setup_logging(out / "train.log")
    train_utts = read_manifest(args.train)
    dev_utts = read_manifest(args.dev) if args.dev else None
    model = load_model(args.model)
    evaluator = None
    if dev_utts is not None:
        evaluator = dev_evaluator(dev_utts, cfg.eval_batch_size, cfg.eval_max_utts)
    general = None
    if cfg.dev_general:
        general = dev_evaluator(read_manifest(cfg.dev_general), cfg.eval_batch_size, cfg.eval_max_utts,
                                desc="general dev")
    if cfg.gate and dev_utts is None:
        raise UsageError("the config's gate is calibrated on the target dev set: give --dev")
    summary = train(model, train_utts, out, cfg, evaluator, general, train_manifest=args.train, dev_manifest=args.dev,
                    force=args.force)
    best = summary.get("best_dev_wer")
    print(f"{out}: trained {summary['steps']} steps ({summary['trainable_parameters']:,} of "
          f"{summary['total_parameters']:,} parameters)" + (f", best dev WER {100 * best:.2f}%" if best is not None
                                                             else ""))
    if (cfg.gate or "gate" in summary) and int(os.environ.get("RANK", "0")) == 0:
        from speechtl.adapt.config import GateConfig
        from speechtl.evaluate.gate import gate_experiment

        gate = gate_experiment(out, GateConfig.from_dict(cfg.gate) if cfg.gate else None, dev_utts or [],
                               read_manifest(cfg.dev_general) if cfg.dev_general else None, cfg.eval_batch_size)
        if gate is not None:
            dev = gate["calibration"]["dev"]
            print(f"{out}: gate at confidence {gate['threshold']:.3f} ({gate['calibration']['rule']}): "
                  f"{dev['to_adapter']} of {dev['utterances']} dev utterances to the adapter; dev WER "
                  f"{100 * dev['wer_gated']:.2f}% gated, {100 * dev['wer_adapter']:.2f}% adapter alone")
    return 0


def cmd_new_ctc_model(args: argparse.Namespace) -> int:
    """A randomly initialised wav2vec2-architecture CTC checkpoint, for training a source model from scratch."""
    import yaml

    from speechtl.data.manifest import read_manifest
    from speechtl.models.ctc import new_ctc_model

    out = Path(args.out)
    if (out / "config.json").is_file():
        print(f"{out}: exists; left as it is")
        return 0
    sizes = {}
    if args.config:
        try:
            sizes = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UsageError(f"{args.config}: not valid YAML ({' '.join(str(e).split())})") from e
        if not isinstance(sizes, dict):
            raise UsageError(f"{args.config}: expected a mapping of new_ctc_model arguments")
    texts = [u.text for u in read_manifest(args.texts, check_audio=False)]
    try:
        new_ctc_model(out, texts, **sizes)
    except (TypeError, ValueError) as e:  # an unknown or bad architecture key
        raise UsageError(f"{args.config or 'defaults'}: {e}") from e
    print(f"{out}: new CTC model")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from speechtl.adapt.export import export_adapter, export_ctranslate2
    from speechtl.errors import UsageError

    if args.format == "ctranslate2":
        card = export_ctranslate2(args.exp, args.out, args.quantization or "float32", accent=args.accent,
                                  name=args.name)
        settings = ", ".join(f"{k} {v}" for k, v in card["model_settings"].items())
        print(f"{args.out}: CTranslate2 Whisper ({card['quantization']}) of {args.exp} ({card['method']}"
              f"{', LoRA merged' if card.get('adapter') else ''}{', ' + settings if settings else ''}); "
              f"load it with faster_whisper.WhisperModel('{args.out}')")
        return 0
    if args.quantization is not None:
        raise UsageError("--quantization applies to --format ctranslate2 only")
    card = export_adapter(args.exp, args.out, accent=args.accent, name=args.name)
    sets = ", ".join(f"{k} {100 * v['wer_before']:.2f}% -> {100 * v['wer_after']:.2f}%"
                     for k, v in card["test_sets"].items())
    print(f"{args.out}: {card['kind']} adapter '{card['name']}' for {card['base_model']} "
          f"(base sha256 {card['base_sha256'][:12]}…){'; WER ' + sets if sets else ''}")
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    """validate / from-kaldi / to-kaldi / perturb-speed: the data contract, checked and converted (Kaldi's
    validate_data_dir.sh, perturb_data_dir_speed_3way.sh)."""
    from speechtl.data.kaldi import read_kaldi_dir, write_kaldi_dir
    from speechtl.data.manifest import ManifestError, parse_manifest, read_manifest, write_manifest

    if args.action == "validate":
        utts, errors = parse_manifest(args.src, check_audio=not args.no_audio_check)
        for e in errors:
            print(e, file=sys.stderr)
        if errors:
            raise ManifestError(f"{args.src}: {len(errors)} problem(s), listed above")
        hours = sum(u.duration for u in utts) / 3600
        print(f"{args.src}: OK, {len(utts)} utterances, {hours:.2f} h, {len({u.speaker for u in utts})} speakers, "
              f"accents: {', '.join(sorted({u.accent for u in utts}))}")
    elif args.action == "from-kaldi":
        if not args.out:
            raise UsageError("from-kaldi needs --out MANIFEST.jsonl")
        utts = read_kaldi_dir(args.src, accent=args.accent, lang=args.lang)
        write_manifest(args.out, utts)
        read_manifest(args.out, check_audio=not args.no_audio_check)  # what was written must validate
        print(f"{args.out}: {len(utts)} utterances from {args.src}")
    elif args.action == "perturb-speed":
        from speechtl.features.augment import speed_copies

        if not args.out:
            raise UsageError("perturb-speed needs --out MANIFEST.jsonl")
        utts = speed_copies(read_manifest(args.src, check_audio=not args.no_audio_check), args.factors)
        write_manifest(args.out, utts)
        print(f"{args.out}: {len(utts)} utterances, {len({u.speaker for u in utts})} (pseudo-)speakers, "
              f"speed factors {' '.join(f'{f:g}' for f in args.factors)}")
    else:
        if not args.out:
            raise UsageError("to-kaldi needs --out DATA_DIR")
        utts = read_manifest(args.src, check_audio=not args.no_audio_check)
        write_kaldi_dir(utts, args.out)
        print(f"{args.out}: Kaldi data dir with {len(utts)} utterances")
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


def _bootstrap(args: argparse.Namespace):
    from speechtl.evaluate.stats import BootstrapConfig

    return BootstrapConfig(n_boot=args.n_boot, seed=args.seed, level=args.level)


def cmd_report(args: argparse.Namespace) -> int:
    from speechtl.report.results import ReportOptions, parse_roles, write_report

    opts = ReportOptions(n_boot=args.n_boot, seed=args.seed, level=args.level,
                         forgetting_weight=args.forgetting_weight, forgetting_tolerance=args.forgetting_tolerance,
                         n_worst=args.worst, top=args.top, plots=not args.no_plots)
    path, table = write_report(Path(args.out), args.title, Path(args.before), Path(args.after),
                               Path(args.train) if args.train else None,
                               Path(args.timings) if args.timings else None, args.command, parse_roles(args.role),
                               args.note, opts)
    print(table)
    print(f"\nwrote {path}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from speechtl.evaluate.external import score_external
    from speechtl.io import setup_logging

    out = Path(args.out)
    setup_logging(out / "score.log")
    res = score_external(Path(args.ref), Path(args.hyp), out, args.normalizer, _bootstrap(args), args.missing,
                         args.jobs, args.label)
    ci = res["bootstrap"]["wer"]
    interval = f" [{100 * ci['low']:.2f}, {100 * ci['high']:.2f}]" if ci["low"] is not None else ""
    print(f"{out}: WER {100 * res['wer']['rate']:.2f}%{interval}  CER {100 * res['cer']['rate']:.2f}%  "
          f"({res['utterances']} utterances, {res['bootstrap']['speakers']} speakers)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from speechtl.report.compare import compare
    from speechtl.report.results import parse_roles

    path, text = compare(args.paths, Path(args.out), _bootstrap(args), parse_roles(args.role), args.title,
                         args.forgetting_weight, args.forgetting_tolerance, plots=not args.no_plots,
                         base_label=args.base_label, pairs=[tuple(p) for p in args.pair],
                         times=not args.no_times)
    print(text)
    print(f"wrote {path}")
    return 0


def _add_stats_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (speakers resampled)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed; the same seed gives the same figures")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")


def _add_forgetting_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forgetting-weight", type=float, default=1.0,
                   help="λ: weight of the source damage beyond the tolerance in the forgetting score")
    p.add_argument("--forgetting-tolerance", type=float, default=0.05,
                   help="τ: relative WER increase on source/general sets tolerated without penalty (0.05 = 5%%)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speechtl", description=__doc__)
    p.add_argument("--version", action="version", version=f"speechtl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="transcribe a manifest and score WER/CER (per speaker and accent)")
    e.add_argument("--model", required=True, help="hub id, checkpoint dir, experiment dir, or CTranslate2 dir")
    e.add_argument("--manifest", required=True, action="append", help="JSON Lines manifest to transcribe; "
                   "repeat it, each with its own --out, to evaluate several sets with one load of the model")
    e.add_argument("--out", required=True, action="append",
                   help="output dir: hyp.jsonl, scores.json, per_utt, wer, eval.log")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--beams", type=int, default=1, help="beam size (1: greedy)")
    e.add_argument("--lm", default="", metavar="ARPA_OR_BIN",
                   help="CTC models: a KenLM n-gram model scored into the beam search (needs --beams > 1, "
                   "pyctcdecode and kenlm)")
    e.add_argument("--lm-alpha", type=float, default=None, help="CTC beam search: the LM's weight "
                   "(default: pyctcdecode's)")
    e.add_argument("--lm-beta", type=float, default=None, help="CTC beam search: the bonus for each word "
                   "(default: pyctcdecode's)")
    e.add_argument("--normalizer", default="whisper", choices=["whisper", "none"])
    e.add_argument("--max-duration", type=float, default=None, help="drop (and log) longer utterances")
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    e.add_argument("--force", action="store_true", help="decode again even if scores.json is up to date")
    e.add_argument("--audio-context", default="", choices=["", "full", "dynamic"],
                   help="Whisper: decode at the full 30 s context or at each batch's length plus a margin "
                        "(default: as the model was adapted; a pretrained model decodes at full)")
    e.add_argument("--audio-context-margin", type=float, default=0.0, metavar="SECONDS",
                   help="Whisper: decode at dynamic context keeping this many seconds after each batch's longest "
                   "utterance (default: the model's own decoding margin, audio_context_decode_margin, else its "
                   "audio_context_margin, 1 s unless it was adapted with another)")
    e.add_argument("--backend", default="transformers", choices=["transformers", "ctranslate2"],
                   help="decode with the transformers model, or with CTranslate2's runtime (the model, LoRA merged, "
                   "converted once and cached by its weights' hash; a CTranslate2 dir runs as it is)")
    e.add_argument("--gate", default="", help="an adapter's confidence gate: as its card says (default), 'off' (the "
                   "adapter decodes everything), or a threshold on the base model's mean token log-probability")
    e.add_argument("--no-merge", action="store_true",
                   help="transformers backend: decode a LoRA adapter through PEFT's layers, as training's dev "
                   "evaluation does (default: folded into the weights, faster; not with a gate, which needs the base)")
    e.add_argument("--compute-type", default="default",
                   help="the weights' type while decoding: transformers backend float32 (default), bfloat16 (GPUs, "
                   "and CPUs with AVX512-BF16 or AMX: faster), float16; ctranslate2 backend int8, int8_float32, "
                   "float16, float32 … (default: as stored, float32 for a converted model)")
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="adapt a model on a training manifest; resumes a killed run in --out, skips a "
                       "finished one, and refuses one made with other inputs")
    t.add_argument("--model", required=True, help="hub id, checkpoint dir, experiment dir (an adapted one is adapted "
                   "further: a second accent on a first), adapter dir, or CTranslate2 dir")
    t.add_argument("--train", required=True, help="training manifest")
    t.add_argument("--dev", default=None, help="dev manifest: WER every eval_every steps, best model kept")
    t.add_argument("--out", required=True, help="experiment dir")
    t.add_argument("--config", default=None, help="YAML training config (see speechtl.adapt.config.TrainConfig)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key; a dotted key sets one key of a block (lora.rank=8)")
    t.add_argument("--force", action="store_true", help="train afresh: a run already in --out (finished, or made "
                   "with another config, base model or manifest) is moved aside to <out>.old-<time>/, not deleted")
    t.set_defaults(func=cmd_train)

    n = sub.add_parser("new-ctc-model", help="write a random wav2vec2-architecture CTC checkpoint whose vocabulary "
                       "spells a manifest's texts (to train a source model from scratch)")
    n.add_argument("--texts", required=True, help="manifest whose texts the character vocabulary must cover")
    n.add_argument("--config", default=None, help="YAML of speechtl.models.ctc.new_ctc_model arguments "
                   "(hidden_size, num_layers, conv_dim, …; other keys go to Wav2Vec2Config)")
    n.add_argument("--out", required=True, help="checkpoint dir to write (left alone if it exists)")
    n.set_defaults(func=cmd_new_ctc_model)

    x = sub.add_parser("export", help="write a LoRA/adapter run's adapter as a PEFT-standard dir with a card "
                       "(base model hash, data, WER before/after) for loading in a product, or the adapted Whisper "
                       "as a CTranslate2 model for faster-whisper")
    x.add_argument("exp", help="experiment dir (with train/ and results.json) or training dir")
    x.add_argument("--out", required=True, help="dir to write")
    x.add_argument("--format", default="adapter", choices=["adapter", "ctranslate2"],
                   help="adapter: the adapter alone (LoRA/adapters runs); ctranslate2: the whole model, a LoRA "
                   "adapter merged in (full/freeze runs too; bottleneck adapters can't be merged)")
    x.add_argument("--quantization", default=None, choices=["float32", "float16", "int8", "int8_float32"],
                   help="ctranslate2: weight type written (default float32: the same transcripts as transformers)")
    x.add_argument("--accent", default=None, help="accent the adapter is for (default: the training data's)")
    x.add_argument("--name", default=None, help="name it loads under by default (default: the accent)")
    x.set_defaults(func=cmd_export)

    from speechtl.data.corpora import CORPORA

    m = sub.add_parser("manifest", help="validate a manifest, convert it from/to a Kaldi data dir, or add "
                       "speed-perturbed copies as pseudo-speakers")
    m.add_argument("action", choices=["validate", "from-kaldi", "to-kaldi", "perturb-speed"])
    m.add_argument("src", help="manifest (validate, to-kaldi, perturb-speed) or Kaldi data dir (from-kaldi)")
    m.add_argument("--out", default=None, help="from-kaldi, perturb-speed: manifest to write; to-kaldi: data dir "
                   "to write")
    m.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1],
                   help="perturb-speed: speed factors, 1.0 keeping the originals (Kaldi's 3-way by default); each "
                   "other factor f makes pseudo-speakers sp<f>-<speaker>, read f times faster and higher")
    m.add_argument("--accent", default=None, help="from-kaldi: accent of every utterance when there is no utt2accent")
    m.add_argument("--lang", default="en", help="from-kaldi: language when there is no utt2lang")
    m.add_argument("--no-audio-check", action="store_true", help="don't check that audio files exist")
    m.set_defaults(func=cmd_manifest)

    pr = sub.add_parser("prepare", help="prepare a corpus into manifests under --out")
    corpora = pr.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    for name, corpus in CORPORA.items():
        c = corpora.add_parser(name, help=corpus.help, description=corpus.help)
        c.add_argument("--out", required=True, help="output dir for the manifests (nothing is written elsewhere)")
        corpus.add_arguments(c)
    pr.set_defaults(func=cmd_prepare)

    r = sub.add_parser("report", help="before/after tables with speaker-bootstrap CIs, forgetting score, error "
                       "analysis, plots, RESULTS.md and results.json")
    r.add_argument("--before", required=True, help="dir of <test set>/scores.json from the base model")
    r.add_argument("--after", required=True, help="dir of <test set>/scores.json from the adapted model")
    r.add_argument("--train", default=None, help="training experiment dir (summary.json, config.yaml, env.json)")
    r.add_argument("--timings", default=None, help="stage<TAB>seconds file written by the recipe")
    r.add_argument("--command", default=None, help="the command that produced the run, quoted in the report")
    r.add_argument("--role", action="append", default=[], metavar="SET=ROLE",
                   help="target, source, general or test, e.g. test_us=source")
    r.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    r.add_argument("--title", default="Results")
    r.add_argument("--out", required=True, help="dir for RESULTS.md, results.json, plots/ and scoring/")
    _add_stats_options(r)
    _add_forgetting_options(r)
    r.add_argument("--worst", type=int, default=5, help="worst utterances shown aligned, per test set")
    r.add_argument("--top", type=int, default=10, help="most frequent errors / fixed / broken words listed")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.set_defaults(func=cmd_report)

    s = sub.add_parser("score", help="score hypotheses from any recogniser (JSON Lines or Kaldi text) against a "
                       "manifest, with the same normalisation and statistics as eval")
    s.add_argument("--ref", required=True, help="reference manifest (audio files need not exist)")
    s.add_argument("--hyp", required=True, help='hypotheses: JSON Lines {"id", "hyp" or "text"}, or Kaldi text '
                   "lines 'utt-id words...'")
    s.add_argument("--out", required=True, help="output dir: hyp.jsonl, scores.json, per_utt, per_spk, ops, wer, "
                   "wer_bootci")
    s.add_argument("--normalizer", default="whisper", choices=["whisper", "none"])
    s.add_argument("--missing", default="error", choices=["error", "empty"],
                   help="an utterance without hypothesis: stop with an error naming it, or score it as empty")
    s.add_argument("--jobs", type=int, default=0,
                   help="processes for normalisation and alignment of large sets (0: one per CPU core)")
    s.add_argument("--label", default=None, help="system name recorded as scores.json's model (default: --hyp)")
    _add_stats_options(s)
    s.set_defaults(func=cmd_score)

    c = sub.add_parser("compare", help="leaderboards of several runs or systems per test set, best first, with "
                       "speaker-bootstrap CIs; COMPARE.md, compare.json, WER vs trainable parameters plot")
    c.add_argument("paths", nargs="+", metavar="[LABEL=]PATH",
                   help="experiment dir (eval/{before,after}/<set>), dir of <set>/ evaluations, or one set's dir")
    c.add_argument("--out", required=True, help="dir for COMPARE.md, compare.json and plots/")
    c.add_argument("--role", action="append", default=[], metavar="SET=ROLE",
                   help="role of a test set (default: from each experiment's results.json)")
    c.add_argument("--title", default="Comparison")
    c.add_argument("--base-label", default=None, help="name of the base model when the experiments share one (default: "
                   "'base: <model>', or '<experiment> (before)' for a base of one experiment)")
    c.add_argument("--pair", nargs=2, action="append", default=[], metavar=("FIRST", "SECOND"),
                   help="also the paired difference SECOND − FIRST of two systems (labels) on each set both have; "
                   "repeatable")
    _add_stats_options(c)
    _add_forgetting_options(c)
    c.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    c.add_argument("--no-times", action="store_true", help="leave out the table of each experiment's recipe stage "
                   "times (e.g. runs timed on a machine shared with other work)")
    c.set_defaults(func=cmd_compare)
    return p


def _traceback_file(args: argparse.Namespace) -> Path:
    """Where an internal error's traceback goes: ``error.log`` in the command's output dir when it is one
    (``--out`` of eval, train, report…), else a new temporary file."""
    out = getattr(args, "out", None)
    if out and Path(out).is_dir():
        return Path(out) / "error.log"
    fd, name = tempfile.mkstemp(prefix="speechtl-error-", suffix=".log")
    os.close(fd)
    return Path(name)


def _report_internal_error(args: argparse.Namespace, error: Exception) -> Path:
    """Write the traceback of a bug, with the command that hit it, and return where it went."""
    path = _traceback_file(args)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{datetime.datetime.now().isoformat(timespec='seconds')} speechtl {__version__}: "
                f"{' '.join(sys.argv)}\n")
        traceback.print_exception(type(error), error, error.__traceback__, file=f)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Bad input (a :class:`~speechtl.errors.SpeechtlError` or a missing file) is said in
    one line, exit 2; anything else is a bug in speechtl: one line saying so and where its traceback is, exit 1.
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "device", "unset") is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return args.func(args)
    except (SpeechtlError, FileNotFoundError) as e:
        print(f"speechtl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: not the user's to fix, but the traceback is what a fix needs
        try:
            where = f"traceback in {_report_internal_error(args, e)}"
        except OSError as write_error:
            where = f"the traceback could not be written ({write_error})"
        summary = " ".join(str(e).split())[:300]
        print(f"speechtl {args.command}: internal error (a bug in speechtl, not a problem with your input): "
              f"{type(e).__name__}{': ' + summary if summary else ''}; {where}; please report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
