"""speechtl eval vs the transformers ASR pipeline (its defaults), same model, same audio, one run.

    python benchmarks/eval_speed.py [--model openai/whisper-tiny.en] [--n 20] [--repeats 2] [--manifest M]

Makes ``--n`` short espeak-ng en-us utterances (or takes ``--n`` of a manifest's, spread over it: real speech),
then times, on the same warm process:
  * ``pipeline("automatic-speech-recognition", model=DIR)`` called on the list of arrays, defaults;
    every row reads the WAV files inside its timing, with the same loader (see ``read``);
  * speechtl's decoding path (``transcribe_utterances``, default DecodeOptions: length-sorted batches of 16);
  * for attribution, speechtl at batch size 1, and CTranslate2's runtime (the correctness reference);
  * ``speechtl eval --backend ctranslate2`` (the model converted once by CTranslate2's own converter)
    at ``--compute-type`` float32 and int8, and, on that same converted model, faster-whisper's own
    ``WhisperModel.transcribe`` (one utterance a call) and ``BatchedInferencePipeline`` (the
    utterances as clips of one stream, batches of 16), both greedy as speechtl decodes, float32 and int8
    (``--no-ctranslate2`` leaves these rows out);
  * speechtl, and its CTranslate2 backend, at ``--audio-context dynamic`` (the margin the model was saved
    with, else the default): the speed a model adapted at dynamic context decodes at. For a pretrained
    model its WER there is the un-adapted cost of the cut context (benchmarks/audio_context.py measures
    that per margin); ``--model EXP_MODEL_DIR`` of a model adapted at dynamic context gives the real
    figure, its other speechtl rows then decoding at full context, as the pipeline does;
  * the same dynamic-context decode with the weights in bfloat16 (``speechtl eval --compute-type bfloat16``),
    beside the greedy pipeline in bfloat16 too (``dtype=torch.bfloat16``), its like-for-like peer
    (``--no-bfloat16`` leaves these two rows out: a CPU without AVX512-BF16 or AMX emulates bfloat16);
  * the same dynamic-context decode with the vocabulary projection left to MKL (transformers' own product), for
    attribution of the oneDNN-packed one speechtl eval uses in float32 on CPU (speechtl.models.packed);
  * for a LoRA experiment (``--model EXP``): speechtl decodes it as ``speechtl eval`` does, merged into the
    weights; the pipeline gets that merged model (saved to a temporary dir: it can't load an adapter on an
    offline base); one more row decodes it through PEFT's layers (``--no-merge``), for attribution.
The pipeline decodes Whisper with a beam of 5 by default, speechtl greedily; both are also timed with
the other's decoding, so the ratio is shown like for like too. Every row's time is its best of
``--repeats`` rounds, the rounds interleaved over all rows (see ``interleaved``). Writes
``benchmarks/results/eval_speed.{json,md}``: the speed ratio, both WERs, and which transcripts differ, with the
settings behind the differences.
A quick check that it runs: ``--n 3 --repeats 1 --out /tmp/eval_speed``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechtl.data.corpora.espeak import find_espeak, read_sentences
from speechtl.data.manifest import Utterance
from speechtl.data.text import normalizer_for
from speechtl.evaluate.decode import DecodeOptions, load_for_eval, merges_lora, transcribe_utterances
from speechtl.evaluate.evaldir import score_hypotheses
from speechtl.features.audio import load_audio
from speechtl.io import atomic_write, environment, write_json
from speechtl.models import resolve_local
from speechtl.models.packed import PackedLinear

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "data_manifests" / "synthetic_caribbean" / "sentences.txt"


def make_utterances(n: int, workdir: Path) -> list[Utterance]:
    espeak = find_espeak()
    import soundfile as sf

    utts = []
    for i, text in enumerate(read_sentences(SENTENCES)[:n]):
        wav = workdir / f"u{i:02d}.wav"
        subprocess.run([espeak, "-v", "en-us", "-w", str(wav), text], check=True)
        utts.append(Utterance(id=f"u{i:02d}", audio=str(wav), duration=sf.info(str(wav)).duration, text=text,
                              speaker="en-us", accent="us"))
    return utts


def from_manifest(manifest: str, n: int) -> list[Utterance]:
    """``n`` utterances of ``manifest``, every k-th so that they spread over its speakers (real speech)."""
    from speechtl.data.manifest import read_manifest

    utts = read_manifest(manifest)
    return utts[::max(1, len(utts) // n)][:n]


def read(utts: list[Utterance]) -> list[np.ndarray]:
    """The utterances' audio as every system gets it: each timed run starts from the WAV files, read (and resampled
    to 16 kHz) by speechtl's loader, so all decode the same samples and pay the same for reading them, as
    ``speechtl eval`` does."""
    return [load_audio(u.audio, 16000) for u in utts]


def interleaved(repeats: int, systems: dict[str, Callable[[], dict[str, str]]],
                rounds: dict[str, list[float]] | None = None,
                cpu_rounds: dict[str, list[float]] | None = None) -> dict[str, tuple[float, dict]]:
    """Each system's best time of ``repeats`` rounds, and its transcripts; ``rounds``, when given, receives every
    round's wall seconds of each system, ``cpu_rounds`` its CPU seconds (this process's, every thread's: time the
    machine's other tenants took from it is not counted, so these vary less from run to run).

    The rounds are interleaved (A B C, A B C, …) rather than each system's repeats run back to back, and every
    system gets the same number: a slow spell of a shared machine then falls on all of them alike instead of on
    whichever ran at the time, and no ratio compares one system's best of three with another's single run.
    """
    times: dict[str, list[float]] = rounds if rounds is not None else {}
    cpu: dict[str, list[float]] = cpu_rounds if cpu_rounds is not None else {}
    out: dict[str, dict] = {}
    for _ in range(repeats):
        for name, fn in systems.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out[name] = fn()
            times.setdefault(name, []).append(time.perf_counter() - t0)
            cpu.setdefault(name, []).append(time.process_time() - c0)
    best = {name: min(times[name]) for name in systems}
    return {name: (best[name], out[name]) for name in systems}


def at_context(model, context: str, fn: Callable[[], dict[str, str]]) -> Callable[[], dict[str, str]]:
    """``fn`` run with ``model`` (or the front end of a CTranslate2 backend built on it) at ``context``."""
    def run() -> dict[str, str]:
        with model.settings_as({"audio_context": context}):
            return fn()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="openai/whisper-tiny.en")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_speed"))
    ap.add_argument("--no-ctranslate2", action="store_true",
                    help="leave out the CTranslate2 backend and faster-whisper rows")
    ap.add_argument("--no-bfloat16", action="store_true",
                    help="leave out the bfloat16 rows (a CPU without AVX512-BF16 or AMX emulates it: slow, and no "
                         "figure a user of that CPU would decode with)")
    ap.add_argument("--manifest", default="", help="take --n utterances of this manifest (real speech) instead of "
                    "making espeak-ng ones")
    args = ap.parse_args()
    from transformers import pipeline

    # as speechtl eval loads it (LoRA merged), without a confidence gate: the pipeline has none
    model = load_for_eval(args.model, DecodeOptions(gate="off"), device="cpu")
    model.configure(audio_context="full")  # like for like with the pipeline, even for a model adapted at dynamic
    # the dynamic-context rows' own copies: the weights in bfloat16, and (LoRA) unmerged
    half = None if args.no_bfloat16 else load_for_eval(args.model, DecodeOptions(gate="off", compute_type="bfloat16"),
                                                       device="cpu")
    unmerged = load_for_eval(args.model, DecodeOptions(gate="off", merge_lora=False), device="cpu") \
        if merges_lora(args.model, "off") else None
    # and one with the vocabulary projection as transformers runs it (MKL), for attribution of the packed one's
    unpacked = load_for_eval(args.model, DecodeOptions(gate="off"), device="cpu")
    if isinstance(unpacked.module.get_output_embeddings().forward, PackedLinear):
        del unpacked.module.get_output_embeddings().forward  # the instance's forward gone, nn.Linear's own is back
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = pipeline_dir(args.model, model, Path(tmp) / "merged")
        utts = from_manifest(args.manifest, args.n) if args.manifest else make_utterances(args.n, Path(tmp))
        audios = read(utts)
        pipe = pipeline("automatic-speech-recognition", model=model_dir, device="cpu")
        pipe_half = None if half is None else pipeline("automatic-speech-recognition", model=model_dir, device="cpu",
                                                       dtype=torch.bfloat16)
        for p in (pipe, pipe_half):
            if p is not None:
                p([audios[0]])  # warm-up, both sides
        for m in (model, half, unmerged, unpacked):
            if m is not None:
                transcribe_utterances(m, utts[:2], DecodeOptions())

        def piped(pipe=pipe, **kwargs: Any) -> dict[str, str]:
            out = pipe([{"raw": a, "sampling_rate": 16000} for a in read(utts)], **kwargs)
            return {u.id: o["text"].strip() for u, o in zip(utts, out, strict=True)}

        def dynamic(m) -> Callable[[], dict[str, str]]:
            return at_context(m, "dynamic", lambda: transcribe_utterances(m, utts, DecodeOptions()))

        # the same decoding on both sides: the pipeline's default beam of 5, and greedy
        beams = pipeline_settings(pipe)["generate_kwargs"].get("num_beams", 1)
        ours_at = {"speechtl": DecodeOptions(), "speechtl_batch1": DecodeOptions(batch_size=1),
                   f"speechtl_beam{beams}": DecodeOptions(num_beams=beams)}
        systems = {"pipeline": piped, "pipeline_greedy": lambda: piped(generate_kwargs={"num_beams": 1}),
                   **{name: lambda o=o: transcribe_utterances(model, utts, o) for name, o in ours_at.items()},
                   "speechtl_dynamic": dynamic(model),
                   **({} if half is None else {
                       "pipeline_greedy_bfloat16": lambda: piped(pipe_half, generate_kwargs={"num_beams": 1}),
                       "speechtl_dynamic_bfloat16": dynamic(half)}),
                   "speechtl_dynamic_unpacked": dynamic(unpacked),
                   **({"speechtl_dynamic_unmerged": dynamic(unmerged)} if unmerged is not None else {})}
        ct2_systems = {} if args.no_ctranslate2 else ctranslate2_systems(model, utts, audios)
        systems.update(ct2_systems)
        ref_hyps = ctranslate2_reference(args.model, model, audios, utts)
        rounds: dict[str, list[float]] = {}
        cpu_rounds: dict[str, list[float]] = {}
        timed = interleaved(args.repeats, systems, rounds, cpu_rounds)
        (t_pipe, pipe_hyps), (t_pipe_greedy, pipe_greedy) = timed["pipeline"], timed["pipeline_greedy"]
        (t_ours, ours), (t_b1, ours_b1) = timed["speechtl"], timed["speechtl_batch1"]
        (t_ours_beam, ours_beam), (t_dyn, ours_dyn) = timed[f"speechtl_beam{beams}"], timed["speechtl_dynamic"]
        ct2_rows = {name: timed[name] for name in ct2_systems}
        extra_rows = {name: timed[name] for name in ("pipeline_greedy_bfloat16", "speechtl_dynamic_bfloat16",
                                                     "speechtl_dynamic_unmerged", "speechtl_dynamic_unpacked")
                      if name in timed}
    norm = normalizer_for("en")
    wer = {name: score_hypotheses(utts, h)[1].wer.rate
           for name, h in (("pipeline", pipe_hyps), ("speechtl", ours), ("speechtl_batch1", ours_b1),
                           ("pipeline_greedy", pipe_greedy), (f"speechtl_beam{beams}", ours_beam),
                           ("speechtl_dynamic", ours_dyn),
                           *((name, h) for name, (_, h) in {**extra_rows, **ct2_rows}.items()))}
    diff = [u.id for u in utts if norm(pipe_hyps[u.id]) != norm(ours[u.id])]
    diff_raw = [u.id for u in utts if pipe_hyps[u.id] != ours[u.id]]
    result = {
        "model": args.model, "utterances": len(utts), "audio_seconds": round(sum(u.duration for u in utts), 2),
        "repeats": args.repeats, "threads": torch.get_num_threads(),
        "seconds": {"pipeline": round(t_pipe, 3), "speechtl": round(t_ours, 3), "speechtl_batch1": round(t_b1, 3),
                    "pipeline_greedy": round(t_pipe_greedy, 3), f"speechtl_beam{beams}": round(t_ours_beam, 3),
                    "speechtl_dynamic": round(t_dyn, 3), **{name: round(t, 3) for name, (t, _) in extra_rows.items()}},
        "rounds": {name: [round(t, 3) for t in ts] for name, ts in rounds.items()},
        "cpu_rounds": {name: [round(t, 3) for t in ts] for name, ts in cpu_rounds.items()},
        "speechtl_dynamic_differ": {u.id: ours_dyn[u.id] for u in utts if ours_dyn[u.id] != ours[u.id]},
        "differ_from_speechtl_dynamic": {name: sum(h[u.id] != ours_dyn[u.id] for u in utts)
                                         for name, (_, h) in extra_rows.items() if name.startswith("speechtl")},
        "audio": args.manifest or "espeak-ng en-us",
        "speedup_vs_pipeline": round(t_pipe / t_ours, 2),
        "speedup_same_decoding": {"greedy": round(t_pipe_greedy / t_ours, 2),
                                  f"beam{beams}": round(t_pipe / t_ours_beam, 2)},
        "pipeline_beams": beams, "wer": wer,
        "differ_same_decoding": {"greedy": sum(pipe_greedy[u.id] != ours[u.id] for u in utts),
                                 f"beam{beams}": sum(pipe_hyps[u.id] != ours_beam[u.id] for u in utts)},
        "differ_from_pipeline": {"raw": len(diff_raw), "after_normalisation": len(diff)},
        "speechtl_batched_vs_batch1_differ": sum(ours[u.id] != ours_b1[u.id] for u in utts),
        "output_words": {"pipeline": sum(len(h.split()) for h in pipe_hyps.values()),
                         "speechtl": sum(len(h.split()) for h in ours.values())},
        "pipeline_settings": pipeline_settings(pipe),
        "ctranslate2": {
            "seconds": {name: round(t, 3) for name, (t, _) in ct2_rows.items()},
            "differ_from_speechtl": {
                name: sum(h[u.id] != ours[u.id] for u in utts) for name, (_, h) in ct2_rows.items()},
            "differ_from_speechtl_after_normalisation": {
                name: sum(norm(h[u.id]) != norm(ours[u.id]) for u in utts) for name, (_, h) in ct2_rows.items()},
            "differing": {name: {u.id: h[u.id] for u in utts if h[u.id] != ours[u.id]}
                          for name, (_, h) in ct2_rows.items()},
            "settings": FASTER_WHISPER_GREEDY},
        "speechtl_hyps": [{"id": u.id, "hyp": ours[u.id]} for u in utts],
        "examples": [{"id": i, "ref": next(u.text for u in utts if u.id == i), "pipeline": pipe_hyps[i],
                      "speechtl": ours[i]} for i in diff_raw],
        "environment": environment(),
    }
    if ref_hyps is not None:
        result["match_ctranslate2_reference"] = {
            "speechtl": sum(ours[u.id] == ref_hyps[u.id] for u in utts),
            "speechtl_batch1": sum(ours_b1[u.id] == ref_hyps[u.id] for u in utts),
            "pipeline": sum(pipe_hyps[u.id] == ref_hyps[u.id] for u in utts),
            "pipeline_greedy": sum(pipe_greedy[u.id] == ref_hyps[u.id] for u in utts)}
    write_json(Path(args.out).with_suffix(".json"), result)
    write_markdown(Path(args.out).with_suffix(".md"), result)
    print(json.dumps({k: result[k] for k in ("seconds", "speedup_vs_pipeline", "speedup_same_decoding", "wer",
                                             "differ_from_pipeline", "differ_same_decoding")}, indent=1))
    print("reference matches:", result.get("match_ctranslate2_reference"))


#: faster-whisper decoding as speechtl's default: greedy, no temperature fallback, no timestamps, no VAD,
#: each utterance on its own (no previous text as prompt).
FASTER_WHISPER_GREEDY = {"language": "en", "beam_size": 1, "temperature": 0.0, "without_timestamps": True,
                         "vad_filter": False, "condition_on_previous_text": False}


def ctranslate2_systems(model, utts, audios) -> dict[str, Callable[[], dict[str, str]]]:
    """The CTranslate2 backend (at full and at dynamic context) and faster-whisper on the same converted model,
    each built and warmed up, as systems for :func:`interleaved` to time."""
    try:
        import faster_whisper
    except ImportError:
        print("faster-whisper is not installed (pip install 'speechtl[ctranslate2]'): its rows are left out")
        faster_whisper = None
    from speechtl.models.ct2 import CT2Whisper, cached_export

    threads = torch.get_num_threads()
    systems: dict[str, Callable[[], dict[str, str]]] = {}
    dynamic: dict[str, Callable[[], dict[str, str]]] = {}  # last in the table, as they were before
    for context, suffix in (("full", ""), ("dynamic", "dynamic_")):
        for compute in ("float32", "int8"):
            with model.settings_as({"audio_context": context}):
                backend = CT2Whisper.from_model(model, compute_type=compute, threads=threads)
                transcribe_utterances(backend, utts[:2], DecodeOptions())  # warm-up
            (dynamic if suffix else systems)[f"ctranslate2_{suffix}{compute}"] = at_context(
                model, context, lambda b=backend: transcribe_utterances(b, utts, DecodeOptions()))
    if faster_whisper is None:
        return {**systems, **dynamic}
    ct2_dir = cached_export(model)  # the full-context rows' conversion (cached): what faster-whisper loads
    # the utterances as clips of one stream: how the batched pipeline takes many short inputs at once
    ends = np.cumsum([len(a) for a in audios]) / 16000
    # bounds half a sample in: faster-whisper truncates seconds * 16000 to int, and a bound a rounding error short
    # of a whole sample would widen a clip by one, so the clips would add up to more than the stream (its assertion)
    bounds = np.concatenate([[0], np.cumsum([len(a) for a in audios])]) + 0.5
    clips = [{"start": float(b0 / 16000), "end": float(b1 / 16000)}
             for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True)]
    for compute in ("float32", "int8"):
        fw = faster_whisper.WhisperModel(str(ct2_dir), device="cpu", compute_type=compute, cpu_threads=threads)

        def one_by_one(fw=fw):
            out = {}
            for u in utts:
                segments, _ = fw.transcribe(read([u])[0], **FASTER_WHISPER_GREEDY)
                out[u.id] = " ".join(s.text.strip() for s in segments).strip()
            return out

        batched = faster_whisper.BatchedInferencePipeline(fw)

        def in_batches(batched=batched):
            options = {k: v for k, v in FASTER_WHISPER_GREEDY.items() if k != "condition_on_previous_text"}
            stream = np.concatenate(read(utts))
            segments, _ = batched.transcribe(stream, clip_timestamps=clips, batch_size=16, **options)
            texts: dict[int, list[str]] = {}
            for s in segments:  # each segment back to the clip it starts in
                i = int(np.searchsorted(ends, s.start + 1e-3))
                texts.setdefault(i, []).append(s.text.strip())
            return {u.id: " ".join(texts.get(i, [])).strip() for i, u in enumerate(utts)}

        one_by_one()  # warm-up
        systems[f"faster_whisper_{compute}"] = one_by_one
        systems[f"faster_whisper_batched_{compute}"] = in_batches
    return {**systems, **dynamic}


def pipeline_dir(source: str, model, merged: Path) -> str:
    """A transformers checkpoint dir of ``model`` for the pipeline: the source's own, or, for an adapter (merged
    into ``model`` as speechtl eval decodes it), the merged model saved to ``merged``."""
    from speechtl.adapt.adapters import is_adapter_dir, resolve_adapter_dir

    if is_adapter_dir(resolve_adapter_dir(source)):
        if model.active_adapter is not None:
            raise SystemExit(f"{source}: a bottleneck adapter can't be merged into the weights, so the transformers "
                             "pipeline can't decode it; benchmark a LoRA, full or freeze run")
        for part in (model.module, model.feature_extractor, model.tokenizer):
            part.save_pretrained(merged)
        return str(merged)
    if Path(source).is_dir():
        return source
    path = Path(model.module.name_or_path)  # a hub id: its hub cache, or the offline conversion
    return str(path if path.is_dir() else resolve_local(Path(source)))


def pipeline_settings(pipe) -> dict:
    """What the pipeline decodes with by default: transformers 5 gives Whisper a beam of 5 there."""
    gen = pipe.model.generation_config
    prepare = getattr(pipe, "_prepare_generate_kwargs", None)
    return {"batch_size": pipe._batch_size or 1, "chunk_length_s": pipe._preprocess_params.get("chunk_length_s"),
            "forward_params": {k: str(v) for k, v in pipe._forward_params.items()},
            "generate_kwargs": prepare({}) if prepare else {}, "max_length": gen.max_length}


def ctranslate2_reference(model_id, model, audios, utts) -> dict[str, str] | None:
    """Greedy transcripts from CTranslate2's runtime on the same log-mel features, when it has the model."""
    import importlib.util

    from speechtl.models import OFFLINE_FALLBACKS

    if importlib.util.find_spec("ctranslate2") is None or model_id not in OFFLINE_FALLBACKS:
        return None
    from speechtl.models.ct2 import CT2Whisper

    runtime = CT2Whisper(OFFLINE_FALLBACKS[model_id][0](), model, compute_type="float32")  # the packaged model
    return dict(zip((u.id for u in utts), runtime.transcribe(model.collate(audios)), strict=True))


def round_ratios(r: dict, slow: str, fast: str) -> str:
    """How many times faster ``fast`` ran than ``slow`` within each round (the two timed minutes apart at most, so
    a slow spell of the machine falls on both): the median and range over the rounds."""
    ratios = sorted(a / b for a, b in zip(r["rounds"][slow], r["rounds"][fast], strict=True))
    return (f"round by round: median {float(np.median(ratios)):.2f}x, from {ratios[0]:.2f}x to {ratios[-1]:.2f}x "
            f"over {len(ratios)} rounds")


def cpu_ratio(r: dict, slow: str, fast: str) -> str:
    """How many times fewer CPU seconds ``fast`` took than ``slow``, each its best round."""
    if "cpu_rounds" not in r:
        return "not recorded"
    return f"{min(r['cpu_rounds'][slow]) / min(r['cpu_rounds'][fast]):.2f}x"


def write_markdown(path: Path, r: dict) -> None:
    s, b = r["seconds"], r["pipeline_beams"]
    lines = [
        "# speechtl eval vs transformers pipeline", "",
        f"Written by `python benchmarks/eval_speed.py` on {time.strftime('%Y-%m-%d')}; model `{r['model']}`, "
        f"{r['utterances']} utterances of {r.get('audio', 'espeak-ng en-us')} ({r['audio_seconds']} s of audio), "
        f"{r['threads']} threads, "
        f"best of {r['repeats']}.", "",
        "| system | seconds | WER | output words |", "|---|---:|---:|---:|",
        f"| transformers pipeline (defaults) | {s['pipeline']:.2f} | {100 * r['wer']['pipeline']:.1f}% | "
        f"{r['output_words']['pipeline']} |",
        f"| speechtl eval (batches of 16) | {s['speechtl']:.2f} | {100 * r['wer']['speechtl']:.1f}% | "
        f"{r['output_words']['speechtl']} |",
        f"| speechtl eval, batch size 1 | {s['speechtl_batch1']:.2f} | {100 * r['wer']['speechtl_batch1']:.1f}% | |",
        f"| transformers pipeline, greedy (num_beams=1) | {s['pipeline_greedy']:.2f} | "
        f"{100 * r['wer']['pipeline_greedy']:.1f}% | |",
        f"| speechtl eval --beams {b} | {s[f'speechtl_beam{b}']:.2f} | {100 * r['wer'][f'speechtl_beam{b}']:.1f}% | |",
        *([f"| speechtl eval --audio-context dynamic | "
           f"{s['speechtl_dynamic']:.2f} | {100 * r['wer']['speechtl_dynamic']:.1f}% | |"]
          if "speechtl_dynamic" in s else []),
        *([f"| transformers pipeline, greedy, bfloat16 | {s['pipeline_greedy_bfloat16']:.2f} | "
           f"{100 * r['wer']['pipeline_greedy_bfloat16']:.1f}% | |",
           f"| speechtl eval --audio-context dynamic --compute-type bfloat16 | {s['speechtl_dynamic_bfloat16']:.2f} | "
           f"{100 * r['wer']['speechtl_dynamic_bfloat16']:.1f}% | |"] if "speechtl_dynamic_bfloat16" in s else []),
        *([f"| speechtl at dynamic context, vocabulary projection unpacked (MKL, as transformers runs it) | "
           f"{s['speechtl_dynamic_unpacked']:.2f} | {100 * r['wer']['speechtl_dynamic_unpacked']:.1f}% | |"]
          if "speechtl_dynamic_unpacked" in s else []),
        *([f"| speechtl eval --audio-context dynamic --no-merge (LoRA through PEFT's layers) | "
           f"{s['speechtl_dynamic_unmerged']:.2f} | {100 * r['wer']['speechtl_dynamic_unmerged']:.1f}% | |"]
          if "speechtl_dynamic_unmerged" in s else []),
        "", f"**Speed-up over the pipeline, each with its defaults: {r['speedup_vs_pipeline']:.2f}x.** "
        f"With the same decoding on both sides: greedy {r['speedup_same_decoding']['greedy']:.2f}x, beam {b} "
        f"{r['speedup_same_decoding'][f'beam{b}']:.2f}x."
        + (f" At dynamic audio context (greedy): {s['pipeline_greedy'] / s['speechtl_dynamic']:.2f}x the greedy "
           f"pipeline's speed (each one's best round; {round_ratios(r, 'pipeline_greedy', 'speechtl_dynamic')}; in "
           f"CPU seconds, best of each, {cpu_ratio(r, 'pipeline_greedy', 'speechtl_dynamic')}); "
           f"{len(r['speechtl_dynamic_differ'])} of {r['utterances']} transcripts differ from speechtl's at full "
           "context."
           if "speechtl_dynamic" in s else "")
        + (f" In bfloat16 (`--compute-type bfloat16`) at dynamic context: "
           f"{s['pipeline_greedy_bfloat16'] / s['speechtl_dynamic_bfloat16']:.2f}x the greedy pipeline in bfloat16 "
           f"({round_ratios(r, 'pipeline_greedy_bfloat16', 'speechtl_dynamic_bfloat16')}), "
           f"{s['pipeline_greedy'] / s['speechtl_dynamic_bfloat16']:.2f}x the float32 one, "
           f"{s['speechtl_dynamic'] / s['speechtl_dynamic_bfloat16']:.2f}x speechtl's own float32 decode; "
           f"{r['differ_from_speechtl_dynamic']['speechtl_dynamic_bfloat16']} of {r['utterances']} transcripts differ "
           "from float32's."
           if "speechtl_dynamic_bfloat16" in s else "")
        + (f" The vocabulary projection packed for oneDNN (speechtl.models.packed) against MKL's product: "
           f"{s['speechtl_dynamic_unpacked'] / s['speechtl_dynamic']:.2f}x as fast "
           f"({round_ratios(r, 'speechtl_dynamic_unpacked', 'speechtl_dynamic')}), "
           f"{r['differ_from_speechtl_dynamic']['speechtl_dynamic_unpacked']} of {r['utterances']} transcripts differ."
           if "speechtl_dynamic_unpacked" in s else "")
        + (f" A LoRA adapter merged (as speechtl eval decodes it) against through PEFT's layers (`--no-merge`): "
           f"{s['speechtl_dynamic_unmerged'] / s['speechtl_dynamic']:.2f}x as fast, "
           f"{r['differ_from_speechtl_dynamic']['speechtl_dynamic_unmerged']} of {r['utterances']} transcripts differ."
           if "speechtl_dynamic_unmerged" in s else ""), "",
        f"The settings behind the differing transcripts: the pipeline decodes Whisper with a beam of {b} by default "
        f"(`{json.dumps(r['pipeline_settings']['generate_kwargs'])}`), speechtl greedily unless `--beams` is given. "
        f"With the same decoding, {r['differ_same_decoding']['greedy']} (greedy) and "
        f"{r['differ_same_decoding'][f'beam{b}']} (beam {b}) of {r['utterances']} transcripts differ.", "",
        f"Transcripts differing from the pipeline's: {r['differ_from_pipeline']['raw']} of {r['utterances']} "
        f"({r['differ_from_pipeline']['after_normalisation']} after normalisation). speechtl batched vs batch 1: "
        f"{r['speechtl_batched_vs_batch1_differ']} differ.", ""]
    if "match_ctranslate2_reference" in r:
        m = r["match_ctranslate2_reference"]
        lines += [f"Identical to CTranslate2's greedy transcripts (the correctness reference): speechtl "
                  f"{m['speechtl']}/{r['utterances']}, speechtl batch 1 {m['speechtl_batch1']}/{r['utterances']}, "
                  f"pipeline {m['pipeline']}/{r['utterances']}, "
                  f"pipeline greedy {m['pipeline_greedy']}/{r['utterances']}.",
                  ""]
    lines += ["Pipeline settings: `" + json.dumps(r["pipeline_settings"]) + "`", ""]
    c = r.get("ctranslate2", {})
    if c.get("seconds"):
        labels = {"ctranslate2_float32": "speechtl eval --backend ctranslate2 (float32)",
                  "ctranslate2_int8": "speechtl eval --backend ctranslate2 --compute-type int8",
                  "ctranslate2_dynamic_float32": "speechtl eval --backend ctranslate2 --audio-context dynamic",
                  "ctranslate2_dynamic_int8": "speechtl eval --backend ctranslate2 --audio-context dynamic "
                                              "--compute-type int8",
                  "faster_whisper_float32": "faster-whisper WhisperModel.transcribe, float32",
                  "faster_whisper_int8": "faster-whisper WhisperModel.transcribe, int8",
                  "faster_whisper_batched_float32": "faster-whisper BatchedInferencePipeline (16), float32",
                  "faster_whisper_batched_int8": "faster-whisper BatchedInferencePipeline (16), int8"}
        lines += ["## CTranslate2 and faster-whisper", "",
                  "The same model converted once by CTranslate2's converter (what `speechtl export --format "
                  "ctranslate2` writes); faster-whisper decoding greedily as speechtl does: "
                  f"`{json.dumps(c['settings'])}`.", "",
                  "| system | seconds | vs speechtl (transformers) | WER | transcripts differing from speechtl "
                  "(raw / normalised) |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {labels.get(k, k)} | {t:.2f} | {s['speechtl'] / t:.2f}x | {100 * r['wer'][k]:.1f}% | "
                  f"{c['differ_from_speechtl'][k]} / {c['differ_from_speechtl_after_normalisation'][k]} |"
                  for k, t in c["seconds"].items()]
        differing = sorted({i for d in c["differing"].values() for i in d})
        if differing:
            names = [k for k in c["seconds"] if c["differing"][k]]
            lines += ["", "| id | speechtl | " + " | ".join(labels.get(k, k) for k in names) + " |",
                      "|---|---|" + "---|" * len(names)]
            lines += [f"| {i} | {next(e for e in r['speechtl_hyps'] if e['id'] == i)['hyp']} | "
                      + " | ".join(c["differing"][k].get(i, "(same)") for k in names) + " |" for i in differing]
        lines += [""]
    if r["examples"]:
        lines += ["| id | reference | pipeline | speechtl |", "|---|---|---|---|"]
        lines += [f"| {e['id']} | {e['ref']} | {e['pipeline']} | {e['speechtl']} |" for e in r["examples"]]
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
