"""Transcribe a manifest in length-sorted batches and score it; resumable, and atomic at the end.

What it writes is an evaluation dir (:class:`~speechtl.evaluate.evaldir.EvalDir`, the same files
``speechtl score`` writes from another recogniser's text). Hypotheses are appended to
``.hyp.partial.jsonl`` batch by batch, so a killed run resumes there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.text import normalizer_version
from speechtl.errors import UsageError
from speechtl.evaluate.evaldir import EvalDir, score_parallel
from speechtl.features.audio import load_utterance
from speechtl.features.batching import sorted_batches
from speechtl.io import progress
from speechtl.models import model_fingerprint
from speechtl.models.base import SpeechModel

LOG = logging.getLogger("speechtl.evaluate")


#: Where decoding runs: the transformers model as trained, or CTranslate2's runtime on the same weights.
BACKENDS = ("transformers", "ctranslate2")
#: The transformers backend's compute types (``default``: the weights as loaded, float32).
TORCH_COMPUTE_TYPES = ("default", "float32", "bfloat16", "float16")


@dataclass
class DecodeOptions:
    batch_size: int = 16
    num_beams: int = 1
    normalizer: str = "whisper"
    #: One of :data:`BACKENDS`; ``ctranslate2`` converts the model once (cached by its weights' hash).
    backend: str = "transformers"
    #: The weights' type while decoding (``default``: float32 for transformers, as stored for CTranslate2):
    #: :data:`TORCH_COMPUTE_TYPES` for transformers, CTranslate2's own (``int8``…) for ctranslate2.
    compute_type: str = "default"
    #: Whisper's audio context for this decode (``full`` | ``dynamic``); empty: as the model was saved.
    audio_context: str = ""
    #: Seconds kept after a batch's longest utterance at dynamic context (implies ``dynamic``; the model's
    #: ``audio_context_decode_margin`` for this decode); 0: as saved.
    audio_context_margin: float = 0.0
    #: The confidence gate (:mod:`speechtl.models.gate`): empty: as the adapter's card says (none without one);
    #: ``off``: the adapter decodes everything; a number: that threshold instead of the card's.
    gate: str = ""
    #: A LoRA adapter (with no gate) folded into the weights for decoding (``speechtl eval --no-merge``: off).
    merge_lora: bool = True
    #: CTC models' beam search (``num_beams > 1``): a KenLM n-gram model (``.arpa`` or KenLM's binary) scored into
    #: the beam; empty: none. ``lm_alpha`` weighs it, ``lm_beta`` rewards each word (None: pyctcdecode's defaults).
    lm: str = ""
    lm_alpha: float | None = None
    lm_beta: float | None = None

    def __post_init__(self) -> None:
        if self.lm and self.num_beams <= 1:
            raise UsageError(f"--lm {self.lm}: an n-gram LM scores beam search's hypotheses: give --beams > 1 "
                             "(e.g. 32)")
        if self.lm and not Path(self.lm).is_file():
            raise UsageError(f"--lm {self.lm}: no such KenLM model file (.arpa or KenLM's binary)")

    @property
    def uses_lm(self) -> bool:
        return bool(self.lm) or self.lm_alpha is not None or self.lm_beta is not None

    def decoding(self) -> dict:
        """The keyword arguments of each batch's ``transcribe``: the beam, and the LM's only when one is set, so
        a family without LM fusion (Whisper) is never handed them."""
        lm = {"lm": self.lm or None, "lm_alpha": self.lm_alpha, "lm_beta": self.lm_beta} if self.uses_lm else {}
        return {"num_beams": self.num_beams, **lm}


def load_for_eval(source: str, opts: DecodeOptions, device: str | None = None):
    """The model ``source`` names, ready to decode on ``opts.backend``.

    For ``transformers`` in float32 on CPU, the vocabulary projection runs through oneDNN with its weight packed
    (:mod:`speechtl.models.packed`: MKL is slow on that product's shape). For ``ctranslate2``, a LoRA adapter is
    merged into its base first (a bottleneck adapter is refused: it can't be merged), and a CTranslate2 dir is run
    as it is; either way the transformers model is kept only as the front end (features at its audio context,
    prompt, tokenizer).
    """
    from speechtl import load_model

    if opts.backend == "transformers":
        from speechtl.models.packed import pack_vocabulary_projection

        dtype = torch_dtype(opts.compute_type)  # a bad one is refused before the model is loaded
        model = with_gate(with_audio_context(load_model(source, device=device), opts), opts.gate)
        if opts.uses_lm and model.family != "ctc":
            raise UsageError(f"{source}: --lm/--lm-alpha/--lm-beta fuse an n-gram LM into CTC beam search; this is "
                             f"a {model.family} model, whose decoder is its own language model")
        model = merged_for_decoding(model) if opts.merge_lora else model
        if dtype is not None:  # after any merge, so a LoRA adapter is folded in float32
            model.module.to(dtype)
        pack_vocabulary_projection(model.module, opts.batch_size)  # after both: float32 on CPU only
        return model
    if opts.backend != "ctranslate2":
        raise UsageError(f"backend {opts.backend!r} unknown; choose one of {', '.join(BACKENDS)}")
    if opts.uses_lm:
        raise UsageError("--lm: CTranslate2 runs Whisper, which has no n-gram LM fusion; a CTC model with an LM "
                         "decodes with --backend transformers")
    if not opts.merge_lora:
        raise UsageError("--no-merge: CTranslate2 runs plain weights, a LoRA adapter merged into them; decode "
                         "through PEFT's layers with --backend transformers")
    import torch

    from speechtl.adapt.export import merge_for_serving
    from speechtl.models.ct2 import CT2Whisper, is_ct2_dir

    loaded = with_gate(load_model(source), opts.gate)
    if loaded.gate is not None:
        raise UsageError(f"{source}: its adapter has a confidence gate (base model first, the adapter where the base "
                         "is unsure), which a merged CTranslate2 model can't apply; decode with --backend "
                         "transformers, or measure the merged model alone with --gate off")
    model = with_audio_context(merge_for_serving(loaded), opts)
    threads = torch.get_num_threads()  # as many as the transformers backend uses
    path = Path(source)
    if path.is_dir() and is_ct2_dir(path) and model.adapters is None:
        return CT2Whisper(path, model, device or "cpu", opts.compute_type, threads)
    return CT2Whisper.from_model(model, device or "cpu", opts.compute_type, threads)


def torch_dtype(compute_type: str):
    """The torch dtype the transformers backend decodes in for ``compute_type`` (``speechtl eval --compute-type``);
    None for ``default``: the weights as loaded, float32.

    bfloat16 runs matrix products natively on GPUs and on CPUs with AVX512-BF16 or AMX: at dynamic context the
    offline recipe's encoder model decoded 20 sentences 1.35x as fast in bfloat16 as in float32 on this project's
    2-core AMD EPYC (Zen 4), identical transcripts, and the real-speech recipe's LoRA run 24 real utterances 1.25x
    as fast, 2 transcripts changed (benchmarks/results/eval_speed_adapted_run4.md, eval_speed_real_lora.md). A CPU
    without native bfloat16 emulates it, slower than float32, which is why float32 stays the default; float16 is for
    GPUs without bfloat16.
    """
    if compute_type not in TORCH_COMPUTE_TYPES:
        raise UsageError(f"--compute-type {compute_type}: the transformers backend decodes in "
                         f"{', '.join(TORCH_COMPUTE_TYPES[1:])}; int8 and the other quantised types are CTranslate2's "
                         "(--backend ctranslate2)")
    if compute_type == "default":
        return None
    import torch

    return getattr(torch, compute_type)


def merged_for_decoding(model: SpeechModel) -> SpeechModel:
    """``model`` with its active LoRA adapter folded into the weights (PEFT's ``merge_and_unload``), when that
    decodes the same: not with a confidence gate (it needs the base model under the adapter), nor for a bottleneck
    adapter (it can't be folded), which are left as they are.

    Unmerged, every adapted linear layer runs PEFT's extra low-rank product and Python wrapper at every decoding
    step: 24 speechocean762 test utterances decoded with the real-speech recipe's LoRA run took 4.83 s through
    PEFT's layers and 3.47 s merged on 2 cores, with identical transcripts
    (benchmarks/results/eval_speed_real_lora.md). Merged weights are summed once, so a logit can differ from the
    unmerged one by float rounding; ``speechtl eval --no-merge`` decodes unmerged, as the trainer's dev evaluation
    does.
    """
    adapters = model.adapters
    active = adapters.active if adapters is not None else None
    if active is None or model.gate is not None or adapters.kinds.get(active) != "lora":
        return model
    model.merge(active)
    return model


def merges_lora(model_source: str, gate: str) -> bool:
    """Whether decoding ``model_source`` with :attr:`DecodeOptions.gate` ``gate`` folds a LoRA adapter into the
    weights (:func:`merged_for_decoding`), read from its adapter dir without loading it: the one case
    :attr:`DecodeOptions.merge_lora` changes."""
    from speechtl.adapt.adapters import CONFIG, AdapterError, read_card, resolve_adapter_dir

    path = resolve_adapter_dir(model_source)
    try:
        lora = json.loads((path / CONFIG).read_text(encoding="utf-8")).get("peft_type") == "LORA"
        gated = gate != "off" and bool(gate or read_card(path).get("gate"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AdapterError):
        return False
    return lora and not gated


def with_audio_context(model: SpeechModel, opts: DecodeOptions) -> SpeechModel:
    """``model`` decoding at the audio context ``opts`` asks for (``speechtl eval --audio-context``,
    ``--audio-context-margin``); unset: as it was saved."""
    settings: dict = {"audio_context": opts.audio_context} if opts.audio_context else {}
    if opts.audio_context_margin:
        if opts.audio_context == "full":
            raise UsageError("--audio-context-margin is the margin of the dynamic context; not with --audio-context "
                             "full")
        settings.update(audio_context="dynamic", audio_context_decode_margin=opts.audio_context_margin)
    if settings:
        try:
            model.configure(**settings)
        except ValueError as e:
            raise UsageError(f"--audio-context: {e}") from e
    return model


def with_gate(model: SpeechModel, gate: str) -> SpeechModel:
    """``model`` with the gate ``gate`` asks for (``speechtl eval --gate``); empty: as its card says."""
    from speechtl.models.gate import Gate

    if gate == "off":
        model.gate = None
    elif gate:
        try:
            threshold = float(gate)
        except ValueError as e:
            raise UsageError(f"--gate must be 'off' or a threshold (a mean log-probability, e.g. -0.3), got {gate!r}") \
                from e
        if model.active_adapter is None:
            raise UsageError(f"--gate {gate}: {model.source} has no adapter to route to (gating needs a LoRA or "
                             "bottleneck adapter run, not a merged or fully fine-tuned model)")
        old = model.gate
        model.gate = Gate(threshold, old.max_compression_ratio) if old is not None else Gate(threshold)
    return model


def check_durations(utts: Sequence[Utterance], model: SpeechModel) -> None:
    limit = model.max_input_seconds
    too_long = [u for u in utts if limit is not None and u.duration > limit]
    if too_long:
        listed = ", ".join(f"{u.id} ({u.duration:.1f}s, {u.source})" for u in too_long[:5])
        raise ManifestError(f"{len(too_long)} utterance(s) are longer than the model's {limit:.0f}s input: {listed}. "
                            "Segment them, or drop them explicitly with --max-duration.")


def transcribe_utterances(model: SpeechModel, utts: Sequence[Utterance], opts: DecodeOptions,
                          partial: Path | None = None, desc: str = "decode",
                          routes: dict[str, dict] | None = None) -> dict[str, str]:
    """Hypotheses by utterance id; with ``partial``, finished batches survive a kill and are skipped.

    A model with a gate (``model.gate``) decodes through it (:func:`speechtl.models.gate.route`); then
    ``routes``, when given, receives each utterance's ``{"gate": "base" | "adapter", "confidence": c}``.
    """
    from speechtl.models.gate import route

    done: dict[str, str] = {}
    extra: dict[str, dict] = routes if routes is not None else {}
    if partial is not None and partial.is_file():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by the kill: everything after it is redone
            done[row["id"]] = row["hyp"]
            if "gate" in row:
                extra[row["id"]] = {"gate": row["gate"], "confidence": row["confidence"]}
        LOG.info("resuming: %d of %d utterances already decoded in %s", len(done), len(utts), partial)
    todo = [u for u in utts if u.id not in done]
    check_durations(todo, model)
    gate = getattr(model, "gate", None)  # a CTranslate2 backend has none
    sink = open(partial, "a", encoding="utf-8") if partial is not None else None
    try:
        with progress(total=len(todo), desc=desc, unit="utt", leave=False) as bar:
            for idx in sorted_batches([u.duration for u in todo], opts.batch_size):
                batch_utts = [todo[i] for i in idx]
                audios = [load_utterance(u, model.sampling_rate) for u in batch_utts]
                langs = [u.lang for u in batch_utts]
                if gate is not None:
                    routed = route(model, audios, gate, langs, **opts.decoding())
                    hyps = routed.texts
                    for u, a, c in zip(batch_utts, routed.to_adapter, routed.confidence, strict=True):
                        extra[u.id] = {"gate": "adapter" if a else "base",
                                       "confidence": c if math.isfinite(c) else None}  # None: did not end
                else:
                    hyps = model.transcribe(model.collate(audios, langs=langs), **opts.decoding())
                for u, h in zip(batch_utts, hyps, strict=True):
                    done[u.id] = h
                    if sink:
                        sink.write(json.dumps({"id": u.id, "hyp": h, **extra.get(u.id, {})}, ensure_ascii=False)
                                   + "\n")
                if sink:
                    sink.flush()
                bar.update(len(batch_utts))
    finally:
        if sink:
            sink.close()
    return done


def rescore(out: EvalDir, utts: Sequence[Utterance], prev: dict, normalizer: str) -> dict:
    """Score an evaluation dir's hypotheses again under the current normaliser (same decode, no model needed)."""
    rows = {r["id"]: r for r in out.read_rows()}
    LOG.info("%s: scored under normaliser %s, now %s: scoring its hypotheses again", out.path,
             prev.get("normalizer_version", "(unrecorded)"), normalizer_version(normalizer))
    scored = score_parallel(utts, {u.id: rows[u.id]["hyp"] for u in utts}, normalizer)
    for row in scored.rows:  # what decoding recorded beside the text (the gate's route) stays
        row.update({k: rows[row["id"]][k] for k in ("gate", "confidence") if k in rows[row["id"]]})
    keep = {k: prev[k] for k in ("run_key", "model", "manifest", "decode_seconds", "options", "gate") if k in prev}
    return out.write(scored, {**keep, "normalizer_version": normalizer_version(normalizer)})


def run_key(model_source: str, manifest: Path, opts: DecodeOptions, utts: Sequence[Utterance]) -> str:
    """Identifies what a decode depends on, so a resumed or skipped run is the same run."""
    options = asdict(opts)
    if opts.backend == "transformers":  # as before backends existed, so evaluations made then still count as done
        del options["backend"]
        if opts.compute_type in ("default", "float32"):  # the same decode: float32 weights
            del options["compute_type"]
    for name in ("audio_context", "audio_context_margin"):  # likewise for evaluations made before these existed
        if not options[name]:
            del options[name]
    if not opts.gate:  # as the card says: the card is part of the model's fingerprint
        del options["gate"]
    if opts.backend != "transformers" or not merges_lora(model_source, opts.gate):  # it changes nothing else
        del options["merge_lora"]
    for name in ("lm", "lm_alpha", "lm_beta"):  # likewise; an LM file is known by its stamps, as a model's weights
        if options[name] in ("", None):
            del options[name]
    if opts.lm:
        lm = Path(opts.lm)
        options["lm"] = [str(lm.resolve()), lm.stat().st_size, lm.stat().st_mtime_ns]
    blob = json.dumps({"model": model_fingerprint(model_source), "manifest": str(manifest.resolve()),
                       "manifest_sha": hashlib.sha256(manifest.read_bytes()).hexdigest(),
                       "ids": hashlib.sha256("\n".join(u.id for u in utts).encode()).hexdigest(), **options},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def evaluate_manifest(model_source: str, load: Callable[[], SpeechModel], utts: Sequence[Utterance],
                      manifest: Path, out_dir: Path, opts: DecodeOptions, force: bool = False) -> dict:
    """Decode, score and write every artefact into ``out_dir``; skip if already done for the same key.

    ``load`` is only called when there is decoding to do, so a finished stage re-runs in a blink.
    """
    out = EvalDir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = run_key(model_source, manifest, opts, utts)
    version = normalizer_version(opts.normalizer)
    if out.is_scored() and not force:
        prev = out.read_scores()
        if prev.get("run_key") == key and prev.get("normalizer_version") == version:
            LOG.info("%s: already scored with the same model, manifest and options; skipping", out_dir)
            return prev
        if prev.get("run_key") == key and out.hyp.is_file():
            return rescore(out, utts, prev, opts.normalizer)
    if out.partial.exists() and (not out.partial_key.is_file() or out.partial_key.read_text() != key):
        out.partial.unlink()
    out.partial_key.write_text(key)
    model = load()
    t0 = time.perf_counter()
    routes: dict[str, dict] = {}
    hyps = transcribe_utterances(model, utts, opts, out.partial, desc=out_dir.name, routes=routes)
    elapsed = time.perf_counter() - t0
    meta = {"run_key": key, "model": model.source, "manifest": str(manifest), "decode_seconds": round(elapsed, 2),
            "options": asdict(opts), "normalizer_version": version}
    scored = score_parallel(utts, hyps, opts.normalizer)
    if routes:  # each utterance's route and the base's confidence, in hyp.jsonl; the totals in scores.json
        for row in scored.rows:
            row.update(routes[row["id"]])
        gate = model.gate
        meta["gate"] = {"threshold": gate.threshold, "max_compression_ratio": gate.max_compression_ratio,
                        "to_adapter": sum(r["gate"] == "adapter" for r in routes.values()), "utterances": len(utts)}
    result = out.write(scored, meta)
    out.partial.unlink(missing_ok=True)
    out.partial_key.unlink(missing_ok=True)
    LOG.info("%s: WER %.2f%% CER %.2f%% on %d utterances (%.1fs)", out_dir, 100 * result["wer"]["rate"],
             100 * result["cer"]["rate"], result["utterances"], elapsed)
    return result
