"""Transcribe a manifest in length-sorted batches and score it; resumable, and atomic at the end.

Output directory (Kaldi ``score_kaldi_wer.sh`` in spirit, every artefact a file):
``hyp.jsonl`` (per utterance: raw and normalised ref/hyp, counts), ``scores.json`` (corpus, per
speaker, per accent), ``per_utt`` (Kaldi-style aligned ref/hyp/op), ``wer`` (one summary line).
Hypotheses are appended to ``.hyp.partial.jsonl`` batch by batch, so a killed run resumes there.
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
from speechtl.data.text import normalizer_for
from speechtl.errors import UsageError
from speechtl.evaluate.metrics import Scores, alignment, score_rows, word_counts
from speechtl.features.audio import load_utterance
from speechtl.features.batching import sorted_batches
from speechtl.io import atomic_write, progress, write_json, write_jsonl
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


def score_hypotheses(utts: Sequence[Utterance], hyps: dict[str, str], normalizer: str = "whisper"
                     ) -> tuple[list[dict], Scores]:
    """Per-utterance rows (raw and normalised text, counts) and their scores."""
    rows = []
    for u in utts:
        norm = normalizer_for(u.lang, normalizer)
        ref_n, hyp_n = norm(u.text), norm(hyps[u.id])
        c = word_counts(ref_n, hyp_n)
        rows.append({"id": u.id, "speaker": u.speaker, "accent": u.accent, "lang": u.lang, "duration": u.duration,
                     "ref": u.text, "hyp": hyps[u.id], "ref_norm": ref_n, "hyp_norm": hyp_n,
                     "sub": c.sub, "del": c.dele, "ins": c.ins, "ref_words": c.ref})
    return rows, score_rows(rows)


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
    out_dir.mkdir(parents=True, exist_ok=True)
    key = run_key(model_source, manifest, opts, utts)
    scores_file = out_dir / "scores.json"
    if scores_file.is_file() and not force:
        prev = json.loads(scores_file.read_text())
        if prev.get("run_key") == key:
            LOG.info("%s: already scored with the same model, manifest and options; skipping", out_dir)
            return prev
    partial = out_dir / ".hyp.partial.jsonl"
    key_file = out_dir / ".hyp.partial.key"
    if partial.exists() and (not key_file.is_file() or key_file.read_text() != key):
        partial.unlink()
    key_file.write_text(key)
    model = load()
    t0 = time.perf_counter()
    hyps = transcribe_utterances(model, utts, opts, partial, desc=out_dir.name)
    elapsed = time.perf_counter() - t0
    rows, scores = score_hypotheses(utts, hyps, opts.normalizer)
    result = {"run_key": key, "model": model.source, "manifest": str(manifest), "utterances": len(rows),
              "audio_seconds": round(sum(u.duration for u in utts), 2), "decode_seconds": round(elapsed, 2),
              "options": asdict(opts), **scores.to_dict()}
    write_jsonl(out_dir / "hyp.jsonl", rows)
    write_per_utt(rows, out_dir / "per_utt")
    w = scores.wer
    with atomic_write(out_dir / "wer") as f:
        f.write(f"%WER {100 * w.rate:.2f} [ {w.errors} / {w.ref}, {w.ins} ins, {w.dele} del, {w.sub} sub ]\n"
                f"%CER {100 * scores.cer.rate:.2f}\n")
    write_json(scores_file, result)
    partial.unlink(missing_ok=True)
    key_file.unlink(missing_ok=True)
    LOG.info("%s: WER %.2f%% CER %.2f%% on %d utterances (%.1fs)", out_dir, 100 * w.rate,
             100 * scores.cer.rate, len(rows), elapsed)
    return result


def write_per_utt(rows: Sequence[dict], path: Path) -> None:
    """Kaldi's ``per_utt``: aligned ref, hyp and op lines, then ``#csid`` counts, per utterance."""
    with atomic_write(path) as f:
        for r in rows:
            al = alignment(r["ref_norm"], r["hyp_norm"])
            cells = [(op, a or "***", b or "***") for op, a, b in al]
            width = [max(len(a), len(b)) for _, a, b in cells]
            for label, col in (("ref  ", 1), ("hyp  ", 2), ("op   ", 0)):
                f.write(f"{r['id']} {label}" + " ".join(c[col].ljust(n) for c, n in zip(cells, width, strict=True))
                        + "\n")
            ops = [op for op, _, _ in al]
            f.write(f"{r['id']} #csid {ops.count('C')} {ops.count('S')} {ops.count('I')} {ops.count('D')}\n")
