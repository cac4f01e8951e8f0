import json
from pathlib import Path

import pytest
from helpers import tone, write_manifest_rows

from speechtl.cli import main


def run_cli(*args):
    return main([str(a) for a in args])


def test_eval_writes_every_artefact(tiny_whisper, toy_manifest, tmp_path):
    out = tmp_path / "ev"
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--out", out,
                   "--batch-size", 3, "--device", "cpu") == 0
    rows = [json.loads(x) for x in (out / "hyp.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"ref", "hyp", "ref_norm", "hyp_norm", "sub", "del", "ins"} <= set(rows[0])
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["per_speaker"]) == {"spk0", "spk1"} and set(scores["per_accent"]) == {"a", "b"}
    assert scores["wer"]["ref"] == sum(r["ref_words"] for r in rows)
    assert (out / "wer").read_text().startswith("%WER ")
    assert (out / "per_utt").read_text().count("#csid") == 8
    assert not (out / ".hyp.partial.jsonl").exists()
    # speechtl score on the same hypotheses writes the same evaluation dir: one writer (EvalDir) for both
    scored = tmp_path / "sc"
    assert run_cli("score", "--ref", toy_manifest, "--hyp", out / "hyp.jsonl", "--out", scored) == 0
    for name in ("hyp.jsonl", "per_utt", "per_spk", "ops", "wer", "wer_bootci"):
        assert (scored / name).read_bytes() == (out / name).read_bytes(), name
    provenance = {"run_key", "model", "manifest", "hypotheses", "options", "decode_seconds"}
    by_eval, by_score = (json.loads((d / "scores.json").read_text()) for d in (out, scored))
    assert {k: v for k, v in by_eval.items() if k not in provenance} == \
        {k: v for k, v in by_score.items() if k not in provenance}


def test_eval_of_several_sets_loads_the_model_once_and_logs_each_apart(tiny_whisper, toy_manifest, tmp_path,
                                                                     monkeypatch, capsys):
    import speechtl.evaluate.decode as decode

    loads = []
    real = decode.load_for_eval
    monkeypatch.setattr(decode, "load_for_eval", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    rows = [json.loads(x) for x in Path(toy_manifest).read_text().splitlines()]
    second = write_manifest_rows(Path(toy_manifest).parent / "second.jsonl", rows[:3])
    out = tmp_path / "ev"
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--out", out / "a",
                   "--manifest", second, "--out", out / "b", "--batch-size", 3) == 0
    assert loads == [str(tiny_whisper)]
    assert [json.loads((out / s / "scores.json").read_text())["utterances"] for s in "ab"] == [8, 3]
    assert str(out / "a") in (out / "a" / "eval.log").read_text()
    assert str(out / "a") not in (out / "b" / "eval.log").read_text()  # each set's log is its own
    assert f"{out / 'b'}: WER" in capsys.readouterr().out
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--manifest", second,
                   "--out", out / "c") == 2
    assert "one --out per --manifest" in capsys.readouterr().err


def test_scoring_text_never_imports_torch(toy_manifest, tmp_path):
    import subprocess
    import sys

    hyp = tmp_path / "hyp.txt"
    hyp.write_text("".join(f"{json.loads(line)['id']} some words\n" for line in toy_manifest.read_text().splitlines()))
    args = ["score", "--ref", str(toy_manifest), "--hyp", str(hyp), "--out", str(tmp_path / "o")]
    code = (f"import sys; from speechtl.cli import main; rc = main({args!r}); "
            "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eval_resumes_from_partial_and_skips_when_done(tiny_whisper, toy_manifest, tmp_path, monkeypatch):
    from speechtl.evaluate import decode

    out = tmp_path / "ev"
    calls = []
    real = decode.transcribe_utterances

    def dying(model, utts, opts, partial=None, desc="", **kw):
        # decode two batches, then die as a kill would
        orig = model.transcribe

        def once(batch, **kw):
            if len(calls) == 2:
                raise KeyboardInterrupt
            calls.append(len(batch["input_features"]))
            return orig(batch, **kw)

        model.transcribe = once
        return real(model, utts, opts, partial, desc, **kw)

    monkeypatch.setattr(decode, "transcribe_utterances", dying)
    with pytest.raises(KeyboardInterrupt):
        run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--out", out, "--batch-size", 3)
    done = (out / ".hyp.partial.jsonl").read_text().splitlines()
    assert len(done) == 6
    monkeypatch.setattr(decode, "transcribe_utterances", real)
    seen = []
    orig_collate = None

    from speechtl.models.whisper import WhisperASR
    orig_collate = WhisperASR.collate
    monkeypatch.setattr(WhisperASR, "collate",
                        lambda self, a, t=None, **kw: seen.append(len(a)) or orig_collate(self, a, t, **kw))
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--out", out, "--batch-size", 3) == 0
    assert sum(seen) == 2  # only the two utterances left
    mtime = (out / "scores.json").stat().st_mtime_ns
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--out", out, "--batch-size", 3) == 0
    assert (out / "scores.json").stat().st_mtime_ns == mtime  # already done: skipped
    # scored under another normaliser version: scored again from hyp.jsonl, nothing decoded
    scores = json.loads((out / "scores.json").read_text())
    assert scores["normalizer_version"].startswith("whisper:")
    (out / "scores.json").write_text(json.dumps({**scores, "normalizer_version": "whisper:0:older"}))
    seen.clear()
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--out", out, "--batch-size", 3) == 0
    again = json.loads((out / "scores.json").read_text())
    assert seen == [] and again["normalizer_version"] == scores["normalizer_version"]
    assert {k: again[k] for k in ("run_key", "wer", "decode_seconds")} == {k: scores[k] for k in
                                                                           ("run_key", "wer", "decode_seconds")}


def bad_case(tmp_path, kind):
    good = tone(tmp_path / "good.wav")
    row = {"id": "x1", "audio": "good.wav", "duration": 1.0, "text": "hi there", "speaker": "s", "accent": "a"}
    rows = [dict(row, id="x0")]
    if kind == "missing file":
        rows.append(dict(row, audio="nowhere.wav"))
    elif kind == "unreadable audio":
        (tmp_path / "bad.wav").write_bytes(b"not audio at all")
        rows.append(dict(row, audio="bad.wav"))
    elif kind == "empty audio":
        import soundfile as sf
        sf.write(str(tmp_path / "empty.wav"), [], 16000)
        rows.append(dict(row, audio="empty.wav"))
    elif kind == "empty transcript":
        rows.append(dict(row, text=""))
    elif kind == "wrong field type":
        rows.append(dict(row, duration="long"))
    assert good.is_file()
    return write_manifest_rows(tmp_path / "m.jsonl", rows)


@pytest.mark.parametrize("kind, message", [
    ("missing file", "m.jsonl:2: field 'audio': file not found"),
    ("unreadable audio", "m.jsonl:2: can't decode audio file"),
    ("empty audio", "m.jsonl:2: audio file"),
    ("empty transcript", "m.jsonl:2: field 'text' is empty"),
    ("wrong field type", "m.jsonl:2: field 'duration' must be a number"),
])
def test_bad_input_is_a_clear_error_and_loses_nothing(tiny_whisper, tmp_path, capsys, kind, message):
    manifest = bad_case(tmp_path, kind)
    out = tmp_path / "ev"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", manifest, "--out", out) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert (out / "keep.txt").read_text() == "earlier results"
    assert not (out / "scores.json").exists()


def test_unknown_model_path(toy_manifest, tmp_path, capsys):
    assert run_cli("eval", "--model", tmp_path / "no_such_model", "--manifest", toy_manifest, "--out",
                   tmp_path / "ev") == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty_dir").mkdir()
    assert run_cli("eval", "--model", tmp_path / "empty_dir", "--manifest", toy_manifest, "--out",
                   tmp_path / "ev") == 2
    assert "not a model directory" in capsys.readouterr().err


def test_too_long_utterances_are_refused_not_skipped(tiny_whisper, tmp_path, capsys):
    tone(tmp_path / "long.wav", seconds=31.0)
    m = write_manifest_rows(tmp_path / "m.jsonl", [
        {"id": "l", "audio": "long.wav", "duration": 31.0, "text": "x", "speaker": "s", "accent": "a"}])
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", m, "--out", tmp_path / "ev") == 2
    assert "longer than the model's 30s input" in capsys.readouterr().err


def test_eval_compute_type_casts_the_transformers_model(tiny_whisper, tiny_ctc, toy_manifest, tmp_path, capsys):
    """--compute-type bfloat16 decodes the same model with its weights in bfloat16 (both families); float32 is the
    default's decode (and its run key); CTranslate2's quantised types are refused with the backend that has them."""
    import torch

    from speechtl.data.manifest import read_manifest
    from speechtl.evaluate.decode import DecodeOptions, load_for_eval, run_key, transcribe_utterances
    from speechtl.features.audio import load_utterance

    utts = read_manifest(toy_manifest)
    for source in (tiny_whisper, tiny_ctc):
        full, half = (load_for_eval(str(source), DecodeOptions(compute_type=t)) for t in ("default", "bfloat16"))
        assert {p.dtype for p in full.module.parameters()} == {torch.float32}
        assert {p.dtype for p in half.module.parameters()} == {torch.bfloat16}
        assert len(transcribe_utterances(half, utts, DecodeOptions())) == len(utts)  # features follow the weights
    # the same model: encoder states agree to bfloat16's precision
    whisper32, whisper16 = (load_for_eval(str(tiny_whisper), DecodeOptions(compute_type=t))
                            for t in ("float32", "bfloat16"))
    feats = whisper32.collate([load_utterance(u, 16000) for u in utts[:3]])["input_features"]
    with torch.inference_mode():
        torch.testing.assert_close(whisper16.encode(feats.to(torch.bfloat16)).float(), whisper32.encode(feats),
                                   rtol=0.05, atol=0.05)

    def key(compute_type):
        return run_key(str(tiny_whisper), toy_manifest, DecodeOptions(compute_type=compute_type), utts)

    assert key("default") == key("float32") != key("bfloat16")
    out = tmp_path / "ev"
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--out", out, "--compute-type",
                   "bfloat16") == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["options"]["compute_type"] == "bfloat16" and scores["run_key"] == key("bfloat16")
    assert run_cli("eval", "--model", tiny_whisper, "--manifest", toy_manifest, "--out", tmp_path / "q",
                   "--compute-type", "int8") == 2
    assert "int8 and the other quantised types are CTranslate2's" in capsys.readouterr().err
