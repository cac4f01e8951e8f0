"""Transcribe a manifest in length-sorted batches and score it; resumable, and atomic at the end.

What it writes is an evaluation dir (:class:`~speechtl.evaluate.evaldir.EvalDir`, the same files
``speechtl score`` writes from another recogniser's text). Hypotheses are appended to
``.hyp.partial.jsonl`` batch by batch, so a killed run resumes there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from speechtl.data.manifest import ManifestError, Utterance
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


@dataclass
class DecodeOptions:
    batch_size: int = 16
    num_beams: int = 1
    normalizer: str = "whisper"
    #: One of :data:`BACKENDS`; ``ctranslate2`` converts the model once (cached by its weights' hash).
    backend: str = "transformers"
    #: CTranslate2's compute type (``default``: as the converted weights are stored, float32; ``int8``…);
    #: ctranslate2 backend only.
    compute_type: str = "default"
    #: Whisper's audio context for this decode (``full`` | ``dynamic``); empty: as the model was saved.
    audio_context: str = ""


def load_for_eval(source: str, opts: DecodeOptions, device: str | None = None):
    """The model ``source`` names, ready to decode on ``opts.backend``.

    For ``ctranslate2``, a LoRA adapter is merged into its base first (a bottleneck adapter is refused:
    it can't be merged), and a CTranslate2 dir is run as it is; either way the transformers model is
    kept only as the front end (features at its audio context, prompt, tokenizer).
    """
    from speechtl import load_model

    if opts.backend == "transformers":
        return with_audio_context(load_model(source, device=device), opts.audio_context)
    if opts.backend != "ctranslate2":
        raise UsageError(f"backend {opts.backend!r} unknown; choose one of {', '.join(BACKENDS)}")
    import torch

    from speechtl.adapt.export import merge_for_serving
    from speechtl.models.ct2 import CT2Whisper, is_ct2_dir

    model = with_audio_context(merge_for_serving(load_model(source)), opts.audio_context)
    threads = torch.get_num_threads()  # as many as the transformers backend uses
    path = Path(source)
    if path.is_dir() and is_ct2_dir(path) and model.adapters is None:
        return CT2Whisper(path, model, device or "cpu", opts.compute_type, threads)
    return CT2Whisper.from_model(model, device or "cpu", opts.compute_type, threads)


def with_audio_context(model: SpeechModel, audio_context: str) -> SpeechModel:
    """``model`` decoding at ``audio_context`` (``speechtl eval --audio-context``); empty: as it was saved."""
    if audio_context:
        try:
            model.configure(audio_context=audio_context)
        except ValueError as e:
            raise UsageError(f"--audio-context: {e}") from e
    return model


def check_durations(utts: Sequence[Utterance], model: SpeechModel) -> None:
    limit = model.max_input_seconds
    too_long = [u for u in utts if limit is not None and u.duration > limit]
    if too_long:
        listed = ", ".join(f"{u.id} ({u.duration:.1f}s, {u.source})" for u in too_long[:5])
        raise ManifestError(f"{len(too_long)} utterance(s) are longer than the model's {limit:.0f}s input: {listed}. "
                            "Segment them, or drop them explicitly with --max-duration.")


def transcribe_utterances(model: SpeechModel, utts: Sequence[Utterance], opts: DecodeOptions,
                          partial: Path | None = None, desc: str = "decode") -> dict[str, str]:
    """Hypotheses by utterance id; with ``partial``, finished batches survive a kill and are skipped."""
    done: dict[str, str] = {}
    if partial is not None and partial.is_file():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by the kill: everything after it is redone
            done[row["id"]] = row["hyp"]
        LOG.info("resuming: %d of %d utterances already decoded in %s", len(done), len(utts), partial)
    todo = [u for u in utts if u.id not in done]
    check_durations(todo, model)
    sink = open(partial, "a", encoding="utf-8") if partial is not None else None
    try:
        with progress(total=len(todo), desc=desc, unit="utt", leave=False) as bar:
            for idx in sorted_batches([u.duration for u in todo], opts.batch_size):
                batch_utts = [todo[i] for i in idx]
                audios = [load_utterance(u, model.sampling_rate) for u in batch_utts]
                batch = model.collate(audios, langs=[u.lang for u in batch_utts])
                hyps = model.transcribe(batch, num_beams=opts.num_beams)
                for u, h in zip(batch_utts, hyps, strict=True):
                    done[u.id] = h
                    if sink:
                        sink.write(json.dumps({"id": u.id, "hyp": h}, ensure_ascii=False) + "\n")
                if sink:
                    sink.flush()
                bar.update(len(batch_utts))
    finally:
        if sink:
            sink.close()
    return done


def run_key(model_source: str, manifest: Path, opts: DecodeOptions, utts: Sequence[Utterance]) -> str:
    """Identifies what a decode depends on, so a resumed or skipped run is the same run."""
    options = asdict(opts)
    if opts.backend == "transformers":  # as before backends existed, so evaluations made then still count as done
        del options["backend"], options["compute_type"]
    if not opts.audio_context:  # likewise for evaluations made before the override existed
        del options["audio_context"]
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
    if out.is_scored() and not force:
        prev = out.read_scores()
        if prev.get("run_key") == key:
            LOG.info("%s: already scored with the same model, manifest and options; skipping", out_dir)
            return prev
    if out.partial.exists() and (not out.partial_key.is_file() or out.partial_key.read_text() != key):
        out.partial.unlink()
    out.partial_key.write_text(key)
    model = load()
    t0 = time.perf_counter()
    hyps = transcribe_utterances(model, utts, opts, out.partial, desc=out_dir.name)
    elapsed = time.perf_counter() - t0
    meta = {"run_key": key, "model": model.source, "manifest": str(manifest), "decode_seconds": round(elapsed, 2),
            "options": asdict(opts)}
    result = out.write(score_parallel(utts, hyps, opts.normalizer), meta)
    out.partial.unlink(missing_ok=True)
    out.partial_key.unlink(missing_ok=True)
    LOG.info("%s: WER %.2f%% CER %.2f%% on %d utterances (%.1fs)", out_dir, 100 * result["wer"]["rate"],
             100 * result["cer"]["rate"], result["utterances"], elapsed)
    return result
