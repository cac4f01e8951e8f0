"""speechtl score (hypotheses from any recogniser) and speechtl compare (leaderboards across runs)."""

import json

import jiwer
import pytest
from fabricate_eval import hypotheses, make_utterances, write_eval, write_experiment, write_manifest

from speechtl.cli import main
from speechtl.data.text import normalizer_for
from speechtl.evaluate import external

SPK = {"car_a": "caribbean", "car_b": "caribbean", "car_c": "caribbean", "jam_a": "jamaican"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def corpus(tmp_path):
    utts = make_utterances(SPK, per_speaker=6, seed=0)
    utts[0].text = "Mr. Smith's boat sails at 10 o'clock!"  # something for the normaliser to do
    hyps = hypotheses(utts, {s: 0.2 + 0.05 * i for i, s in enumerate(SPK)}, seed=1)
    hyps[utts[0].id] = "mister smiths boat sails at ten oclock"
    return utts, hyps, write_manifest(tmp_path / "m" / "test_caribbean.jsonl", utts)


def score(*args):
    return main(["score", *map(str, args)])


def test_score_jsonl_and_kaldi_text_agree_and_match_jiwer(corpus, tmp_path):
    utts, hyps, manifest = corpus
    jl = tmp_path / "hyp.jsonl"
    jl.write_text("".join(json.dumps({"id": k, "text" if i % 2 else "hyp": v}) + "\n"
                          for i, (k, v) in enumerate(hyps.items())))
    kaldi = tmp_path / "text"
    kaldi.write_text("".join(f"{k} {v}\n" for k, v in reversed(hyps.items())))
    assert score("--ref", manifest, "--hyp", jl, "--out", tmp_path / "a" / "test_caribbean") == 0
    assert score("--ref", manifest, "--hyp", kaldi, "--out", tmp_path / "b" / "test_caribbean") == 0
    sa = json.loads((tmp_path / "a" / "test_caribbean" / "scores.json").read_text())
    sb = json.loads((tmp_path / "b" / "test_caribbean" / "scores.json").read_text())
    for k in ("wer", "cer", "per_speaker", "per_accent", "bootstrap"):
        assert sa[k] == sb[k]
    norm = normalizer_for("en", "whisper")
    refs, hs = [norm(u.text) for u in utts], [norm(hyps[u.id]) for u in utts]
    assert sa["wer"]["rate"] == pytest.approx(jiwer.wer(refs, hs))
    assert sa["cer"]["rate"] == pytest.approx(jiwer.cer(refs, hs))
    assert sa["wer"]["sub"] == jiwer.process_words(refs, hs).substitutions
    ci = sa["bootstrap"]["wer"]
    assert sa["bootstrap"]["speakers"] == 4 and ci["low"] < sa["wer"]["rate"] < ci["high"]
    d = tmp_path / "a" / "test_caribbean"
    for f in ("hyp.jsonl", "per_utt", "per_spk", "ops", "wer", "wer_bootci"):
        assert (d / f).is_file(), f
    assert (d / "per_utt").read_text().count("#csid") == len(utts)
    assert (d / "wer").read_text().startswith(f"%WER {100 * sa['wer']['rate']:.2f} ")
    assert "95% Conf Interval [" in (d / "wer_bootci").read_text()


def test_score_names_missing_extra_and_duplicate_ids(corpus, tmp_path, capsys):
    utts, hyps, manifest = corpus
    lines = [f"{k} {v}" for k, v in hyps.items()]
    missing = tmp_path / "missing.txt"
    missing.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    assert score("--ref", manifest, "--hyp", missing, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert f"'{utts[5].id}'" in err and str(missing) in err and "no hypothesis for 1 utterance" in err
    extra = tmp_path / "extra.txt"
    extra.write_text("\n".join([*lines, "ghost-007 hello"]) + "\n")
    assert score("--ref", manifest, "--hyp", extra, "--out", tmp_path / "o") == 2
    assert "'ghost-007'" in capsys.readouterr().err
    dup = tmp_path / "dup.txt"
    dup.write_text("\n".join([*lines, lines[2]]) + "\n")
    assert score("--ref", manifest, "--hyp", dup, "--out", tmp_path / "o") == 2
    assert f"{dup}:{len(lines) + 1}: duplicate utterance id '{utts[2].id}' (first on line 3)" in \
        capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "hyp": "x"}\n{"id": "b"\n')
    assert score("--ref", manifest, "--hyp", bad, "--out", tmp_path / "o") == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    # --missing empty scores the absent hypothesis as all deletions
    assert score("--ref", manifest, "--hyp", missing, "--out", tmp_path / "e", "--missing", "empty") == 0
    row = next(json.loads(x) for x in (tmp_path / "e" / "hyp.jsonl").read_text().splitlines()
               if json.loads(x)["id"] == utts[5].id)
    assert row["hyp"] == "" and row["del"] == row["ref_words"] > 0


def test_hypotheses_with_a_byte_order_mark_and_crlf_read_like_plain_ones(corpus, tmp_path):
    _, hyps, _ = corpus
    for name, text in (("text", "".join(f"{k} {v}\n" for k, v in hyps.items())),
                       ("hyp.jsonl", "".join(json.dumps({"id": k, "hyp": v}) + "\n" for k, v in hyps.items()))):
        win = tmp_path / name
        win.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
        assert external.read_hypotheses(win) == hyps
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xef\xbb\xbfa one\r\nb caf\xe9\r\n")
    with pytest.raises(external.HypothesisError, match=f"{bad}:2: not valid UTF-8"):
        external.read_hypotheses(bad)


def test_parallel_scoring_equals_serial(corpus, monkeypatch, tmp_path):
    utts, hyps, _ = corpus
    from speechtl.evaluate import evaldir
    from speechtl.evaluate.evaldir import score_hypotheses, write_per_utt

    monkeypatch.setattr(evaldir, "PARALLEL_MIN_UTTS", 2)
    par = evaldir.score_parallel(utts, hyps, "whisper", jobs=2)
    ser = evaldir.score_parallel(utts, hyps, "whisper", jobs=1)
    rows, scores = score_hypotheses(utts, hyps, "whisper")
    assert par.rows == ser.rows == rows and par.scores.to_dict() == ser.scores.to_dict() == scores.to_dict()
    write_per_utt(rows, tmp_path / "per_utt")
    assert par.per_utt == ser.per_utt == (tmp_path / "per_utt").read_text()
    assert par.ops == ser.ops and sum(par.ops.substitutions.values()) == scores.wer.sub


def build_runs(tmp_path):
    """Two experiments on the same sets from the same base, and an external system scored on one set."""
    car = make_utterances(SPK, per_speaker=6, seed=0)
    us = make_utterances({"us_a": "us", "us_b": "us", "us_c": "us"}, per_speaker=6, seed=1)
    base_car = hypotheses(car, {s: 0.4 for s in SPK}, 2)
    base_us = hypotheses(us, {"us_a": 0.05, "us_b": 0.05, "us_c": 0.05}, 3)
    small = write_experiment(tmp_path / "lora", {
        "test_caribbean": (car, base_car, hypotheses(car, {s: 0.2 for s in SPK}, 4)),
        "test_us": (us, base_us, hypotheses(us, {"us_a": 0.12, "us_b": 0.12, "us_c": 0.12}, 5))},
        method="lora", trainable=5_000)
    full = write_experiment(tmp_path / "full", {
        "test_caribbean": (car, base_car, hypotheses(car, {s: 0.1 for s in SPK}, 6)),
        "test_us": (us, base_us, hypotheses(us, {"us_a": 0.3, "us_b": 0.3, "us_c": 0.3}, 7))},
        method="full", trainable=90_000)
    ext = write_eval(tmp_path / "kaldi" / "test_caribbean", car, hypotheses(car, {s: 0.3 for s in SPK}, 8), "kaldi")
    return small, full, ext


def test_compare_leaderboards_best_first_with_intervals(tmp_path, capsys):
    small, full, ext = build_runs(tmp_path)
    out = tmp_path / "cmp"
    assert main(["compare", str(small), str(full), f"kaldi-tdnn={ext}", "--out", str(out), "--n-boot", "300",
                 "--role", "test_caribbean=target", "--role", "test_us=source"]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "compare.json").read_text())
    board = data["leaderboards"]["test_caribbean"]
    ranking = [e["system"] for e in board["ranking"]]
    assert ranking == ["full", "lora", "kaldi-tdnn", "base: base-model"]  # base listed once for both runs
    wers = [e["wer"]["value"] for e in board["ranking"]]
    assert wers == sorted(wers)
    assert all(e["wer"]["low"] <= e["wer"]["value"] <= e["wer"]["high"] for e in board["ranking"])
    assert board["ranking"][0]["vs_best"] is None
    assert board["ranking"][-1]["vs_best"]["p_after_better"] == 0.0
    assert data["leaderboards"]["test_us"]["absent"] == ["kaldi-tdnn"]
    assert [e["system"] for e in data["leaderboards"]["test_us"]["ranking"]] == ["base: base-model", "lora", "full"]
    base = next(s for s in data["systems"] if s["kind"] == "base")
    assert base["base_of"] == ["lora", "full"]
    assert {s["label"]: s["trainable_parameters"] for s in data["systems"]}["full"] == 90_000
    fs = data["forgetting"]
    assert set(fs) == {"lora", "full"} and fs["lora"]["score"]["value"] > fs["full"]["score"]["value"]
    md = (out / "COMPARE.md").read_text()
    assert "### test_caribbean (target)" in md and "| 1 | full | full (frozen: decoder) | 90,000 |" in md
    assert "](plots/wer_vs_params.png)" in md and (out / "plots" / "wer_vs_params.png").read_bytes().startswith(PNG)
    assert "| 1 | full |" in printed


def test_compare_intervals_match_report_and_score(tmp_path):
    """The same evaluation gets the same interval from report, compare and score (seeds derive from the set)."""
    small, _, _ = build_runs(tmp_path)
    assert main(["report", "--before", str(small / "eval" / "before"), "--after", str(small / "eval" / "after"),
                 "--role", "test_caribbean=target", "--out", str(small), "--n-boot", "300", "--no-plots"]) == 0
    assert main(["compare", str(small), "--out", str(tmp_path / "cmp"), "--n-boot", "300", "--no-plots"]) == 0
    rep = json.loads((small / "results.json").read_text())["test_sets"]["test_caribbean"]["statistics"]["wer"]
    cmp = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    ranking = {e["system"]: e for e in cmp["leaderboards"]["test_caribbean"]["ranking"]}
    assert ranking["lora"]["wer"] == rep["after"] and ranking["lora (before)"]["wer"] == rep["before"]
    assert cmp["roles"]["test_caribbean"] == "target"  # taken from the run's own results.json


def test_compare_pairs_two_named_systems_on_every_set_both_have(tmp_path, capsys):
    """--pair A B: B − A paired over the same speakers, with the interval the paired bootstrap gives alone."""
    from speechtl.evaluate.stats import BootstrapConfig, paired_bootstrap, resampling_blocks
    from speechtl.report.loading import load_eval_set

    small, full, ext = build_runs(tmp_path)
    (small / "timings.tsv").write_text("stage1 evaluate before\t120.0\nstage2 adapt\t300.0\nstage2 adapt\t60.0\n")
    (full / "timings.tsv").write_text("stage2 adapt\t90.0\n")
    out = tmp_path / "cmp"
    assert main(["compare", str(small), str(full), f"kaldi-tdnn={ext}", "--out", str(out), "--n-boot", "300",
                 "--no-plots", "--pair", "lora", "full", "--pair", "kaldi-tdnn", "lora"]) == 0
    printed = capsys.readouterr().out
    pairs = json.loads((out / "compare.json").read_text())["pairs"]
    # lora/full on both sets; kaldi-tdnn has no test_us, so that pair is on test_caribbean only
    assert [(p["first"], p["second"], p["test_set"]) for p in pairs] == [
        ("lora", "full", "test_caribbean"), ("lora", "full", "test_us"), ("kaldi-tdnn", "lora", "test_caribbean")]
    first, second = (resampling_blocks(load_eval_set(d / "eval" / "after" / "test_us").rows) for d in (small, full))
    alone = paired_bootstrap(first, second, BootstrapConfig(n_boot=300).derive("test_us", "wer"))
    assert pairs[1]["abs_change"] == alone.abs_change.to_dict() and pairs[1]["p_after_better"] == alone.p_better
    assert pairs[1]["abs_change"]["value"] == pytest.approx(pairs[1]["after"]["value"] - pairs[1]["before"]["value"])
    md = (out / "COMPARE.md").read_text()
    assert "## Paired differences" in md and "| test_us | lora | full |" in md and "## Paired differences" in printed
    # each experiment's recipe stages (a resumed stage counts both runs), and the sum of all
    assert "| lora | 2.0 | 6.0 | 8.0 |" in md and "| full | – | 1.5 | 1.5 |" in md
    assert "| all | 2.0 | 7.5 | **9.5** |" in md
    assert main(["compare", str(small), str(full), "--out", str(out), "--n-boot", "300", "--no-plots",
                 "--no-times"]) == 0
    assert "## Time" not in (out / "COMPARE.md").read_text()
    assert main(["compare", str(small), "--out", str(out), "--pair", "lora", "nobody"]) == 2
    assert "no system named 'nobody'" in capsys.readouterr().err


def test_compare_names_a_missing_or_changed_utterance(tmp_path, capsys):
    small, full, ext = build_runs(tmp_path)
    rows = (ext / "hyp.jsonl").read_text().splitlines()
    gone = json.loads(rows[7])["id"]
    (ext / "hyp.jsonl").write_text("\n".join(rows[:7] + rows[8:]) + "\n")
    assert main(["compare", str(small), str(ext.parent), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"'{gone}'" in err and "missing from" in err and str(ext / "hyp.jsonl") in err
    changed = json.loads(rows[2])
    changed["ref_norm"] = "something else entirely"
    (ext / "hyp.jsonl").write_text("\n".join(rows[:2] + [json.dumps(changed)] + rows[3:]) + "\n")
    assert main(["compare", str(small), str(ext.parent), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"utterance '{changed['id']}' has a different reference" in err
    assert main(["compare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 2
    assert "found no evaluations" in capsys.readouterr().err


def test_compare_names_the_model_of_an_evaluation_speechtl_eval_decoded(tmp_path):
    """A dir `speechtl eval --out` wrote (it has a run key) is not an experiment, but its method names the model it
    decoded; one scored from another recogniser's text stays 'external'."""
    from speechtl.evaluate.evaldir import EvalDir, score_parallel
    from speechtl.evaluate.stats import BootstrapConfig

    car = make_utterances(SPK, per_speaker=4, seed=0)
    decoded = tmp_path / "decoded" / "test_caribbean"
    EvalDir(decoded).write(score_parallel(car, hypotheses(car, {s: 0.2 for s in SPK}, 1)),
                           {"model": "exp/lora/train/model", "manifest": "m.jsonl", "run_key": "0123abcd"},
                           BootstrapConfig(n_boot=50))
    ext = write_eval(tmp_path / "kaldi" / "test_caribbean", car, hypotheses(car, {s: 0.3 for s in SPK}, 2), "kaldi")
    assert main(["compare", f"decoded={decoded}", f"kaldi={ext}", "--out", str(tmp_path / "cmp"), "--n-boot", "50",
                 "--no-plots"]) == 0
    systems = {s["label"]: s for s in json.loads((tmp_path / "cmp" / "compare.json").read_text())["systems"]}
    assert systems["decoded"]["method"] == "speechtl eval of exp/lora/train/model"
    assert systems["kaldi"]["method"] == "external" and systems["decoded"]["kind"] == "external"
