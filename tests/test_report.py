"""speechtl report on fabricated evaluation dirs: tables with intervals, forgetting, errors, plots, files."""

import json
import shutil

import pytest
from fabricate_eval import hypotheses, make_utterances, write_eval, write_experiment

from speechtl.cli import main
from speechtl.data.manifest import Utterance

CAR = {"car_a": "caribbean", "car_b": "caribbean", "car_c": "caribbean", "jam_a": "jamaican", "jam_b": "jamaican"}
US = {"us_a": "us", "us_b": "us", "us_c": "us", "us_d": "us"}
PNG = b"\x89PNG\r\n\x1a\n"


def hand_set() -> tuple[list[Utterance], dict[str, str], dict[str, str]]:
    """Two utterances whose fixed and broken words are known by construction."""
    utts = [Utterance("h1", "h1.wav", 1.0, "The boat sails at dawn.", "hs1", "x"),
            Utterance("h2", "h2.wav", 1.0, "We like green tea.", "hs2", "x")]
    before = {"h1": "the boat sails at down", "h2": "we like green tea"}
    after = {"h1": "the boat sails at dawn", "h2": "we like clean tea please"}
    return utts, before, after


@pytest.fixture
def exp(tmp_path):
    car = make_utterances(CAR, per_speaker=8, seed=0)
    us = make_utterances(US, per_speaker=8, seed=1)
    car_b = {s: 0.35 + 0.04 * i for i, s in enumerate(CAR)}
    return write_experiment(tmp_path / "exp", {
        "test_caribbean": (car, hypotheses(car, car_b, 2), hypotheses(car, {s: r / 4 for s, r in car_b.items()}, 3)),
        "test_us": (us, hypotheses(us, {s: 0.05 for s in US}, 4), hypotheses(us, {s: 0.08 for s in US}, 5)),
        "test_hand": hand_set()})


def report(exp, out, *extra):
    return main(["report", "--before", str(exp / "eval" / "before"), "--after", str(exp / "eval" / "after"),
                 "--train", str(exp / "train"), "--role", "test_caribbean=target", "--role", "test_us=source",
                 "--out", str(out), "--n-boot", "300", *map(str, extra)])


def row_of(md: str, prefix: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(prefix))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_tables_intervals_and_verdict(exp, tmp_path, capsys):
    out = tmp_path / "out"
    assert report(exp, out, "--note", "a note", "--command", "run.sh --x") == 0
    printed = capsys.readouterr().out
    md = (out / "RESULTS.md").read_text()
    data = json.loads((out / "results.json").read_text())
    assert data["schema_version"] == 2
    car = data["test_sets"]["test_caribbean"]
    stats = car["statistics"]["wer"]
    assert stats["block_unit"] == "speaker" and stats["blocks"] == 5 and stats["n_boot"] == 300
    assert stats["p_after_better"] == 1.0 and stats["abs_change"]["high"] < 0
    assert stats["before"]["value"] == car["before"]["wer"]["rate"]
    cells = row_of(md, "| test_caribbean | target |")
    assert cells[2:4] == ["40", "5"]
    assert cells[4] == (f"{100 * stats['before']['value']:.2f} [{100 * stats['before']['low']:.2f}, "
                        f"{100 * stats['before']['high']:.2f}]")
    assert cells[8] == "1.000"
    assert "| test_caribbean | target |" in printed and "Bottom line" in printed
    # a reader can tell from the summary alone whether it helped, by how much, and how sure
    assert "**test_caribbean** (target, 5 speakers, 40 utterances): WER" in md
    assert "better (95% CI of the change is below 0)" in md
    assert "a note" in md and "run.sh --x" in md
    # edit operations with S/D/I per system, per accent and per speaker with intervals
    ops = row_of(md, "| test_caribbean | after |")
    w = car["after"]["wer"]
    assert ops[3:8] == [str(w["sub"]), str(w["dele"]), str(w["ins"]), str(w["errors"]), str(w["ref"])]
    jam = row_of(md, "| test_caribbean | jamaican |")
    acc = car["statistics"]["per_accent"]["jamaican"]
    assert jam[2] == "2" and acc["blocks"] == 2 and "[" in jam[3]
    spk = row_of(md, "| test_us | us_b | us |")
    assert spk[3] == "8" and car["statistics"]["per_speaker"]["car_a"]["block_unit"] == "utterance"
    assert "## Per speaker" in md and "## Per accent" in md


def test_forgetting_score_follows_its_formula(exp, tmp_path):
    out = tmp_path / "out"
    assert report(exp, out, "--forgetting-weight", 2, "--forgetting-tolerance", 0.01) == 0
    data = json.loads((out / "results.json").read_text())
    sets = data["test_sets"]
    rate = {n: (sets[n]["before"]["wer"]["rate"], sets[n]["after"]["wer"]["rate"]) for n in ("test_caribbean",
                                                                                             "test_us")}
    gain = (rate["test_caribbean"][0] - rate["test_caribbean"][1]) / rate["test_caribbean"][0]
    damage = (rate["test_us"][1] - rate["test_us"][0]) / rate["test_us"][0]
    fs = data["forgetting"]
    assert fs["target_sets"] == ["test_caribbean"] and fs["source_sets"] == ["test_us"]
    assert fs["target_gain"]["value"] == pytest.approx(gain)
    assert fs["source_damage"]["value"] == pytest.approx(damage)
    assert fs["score"]["value"] == pytest.approx(gain - 2 * max(0.0, damage - 0.01))
    assert fs["weight"] == 2 and fs["tolerance"] == 0.01
    md = (out / "RESULTS.md").read_text()
    assert "score = G − λ · max(0, D − τ)" in md and "## Forgetting" in md


def test_error_analysis_knows_fixed_and_broken_words(exp, tmp_path):
    out = tmp_path / "out"
    assert report(exp, out) == 0
    hand = json.loads((out / "results.json").read_text())["test_sets"]["test_hand"]
    errors = hand["statistics"]["errors"]
    assert errors["fixed"] == [["dawn", 1]] and errors["broken"] == [["green", 1]]
    assert errors["before"]["substitutions"] == [["dawn", "down", 1]]
    assert errors["after"]["substitutions"] == [["green", "clean", 1]]
    assert errors["after"]["insertions"] == [["please", 1]]
    worst = hand["statistics"]["worst_after"][0]
    assert worst["id"] == "h2" and worst["after"]["hyp"].split() == ["we", "like", "clean", "tea", "please"]
    assert worst["after"]["op"].split() == ["C", "C", "S", "C", "I"]
    md = (out / "RESULTS.md").read_text()
    assert "| dawn → down | 1 |" in md and "| dawn | 1 | green | 1 |" in md
    assert "  AFTER  we like clean tea please" in md


def test_plots_and_kaldi_files_are_written_and_consistent(exp, tmp_path):
    out = tmp_path / "out"
    assert report(exp, out) == 0
    md = (out / "RESULTS.md").read_text()
    for png in ("wer_per_accent.png", "speaker_scatter.png"):
        assert (out / "plots" / png).read_bytes().startswith(PNG)
        assert f"](plots/{png})" in md
    data = json.loads((out / "results.json").read_text())
    after = data["test_sets"]["test_caribbean"]["after"]["wer"]
    d = out / "scoring" / "test_caribbean" / "after"
    ops = [line.split() for line in (d / "ops").read_text().splitlines()]
    assert sum(int(x[-1]) for x in ops if x[0] == "substitution") == after["sub"]
    assert sum(int(x[-1]) for x in ops if x[0] == "deletion") == after["dele"]
    assert sum(int(x[-1]) for x in ops if x[0] == "insertion") == after["ins"]
    total = next(x for x in (line.split() for line in (d / "per_spk").read_text().splitlines())
                 if x[:2] == ["SUM", "raw"])
    rows = [json.loads(x) for x in (exp / "eval" / "after" / "test_caribbean" / "hyp.jsonl").read_text().splitlines()]
    wrong = sum(r["sub"] + r["del"] + r["ins"] > 0 for r in rows)
    assert [int(v) for v in total[2:]] == [40, after["ref"], after["hits"], after["sub"], after["ins"], after["dele"],
                                          after["errors"], wrong]
    assert (d / "per_utt").read_text() == (exp / "eval" / "after" / "test_caribbean" / "per_utt").read_text()
    boot = (out / "scoring" / "test_caribbean" / "wer_bootci").read_text()
    assert "Probability of Set2 improving Set1: 100.0%" in boot


def test_config_environment_and_reproducibility(exp, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert report(exp, a, "--seed", 11) == 0 and report(exp, b, "--seed", 11) == 0 and report(exp, c, "--seed", 12) == 0
    da, db, dc = (json.loads((x / "results.json").read_text()) for x in (a, b, c))
    assert da["test_sets"] == db["test_sets"] and da["forgetting"] == db["forgetting"]
    assert da["test_sets"]["test_caribbean"]["statistics"] != dc["test_sets"]["test_caribbean"]["statistics"]
    assert da["options"]["seed"] == 11 and da["options"]["n_boot"] == 300
    assert "learning_rate: 0.001" in da["config"]
    assert da["environment"]["train"]["speechtl_git"] == "abc" and da["environment"]["report"]["packages"]["numpy"]
    md = (a / "RESULTS.md").read_text()
    assert "training configuration (train/config.yaml)" in md and "learning_rate: 0.001" in md
    assert "300 bootstrap replicates over speakers, seed 11" in md


def test_identical_systems_read_as_no_change(tmp_path):
    utts = make_utterances({f"s{i}": "x" for i in range(6)}, per_speaker=5, seed=9)
    hyps = hypotheses(utts, {f"s{i}": 0.2 for i in range(6)}, 1)
    write_eval(tmp_path / "before" / "t", utts, hyps)
    write_eval(tmp_path / "after" / "t", utts, hyps)
    assert main(["report", "--before", str(tmp_path / "before"), "--after", str(tmp_path / "after"),
                 "--role", "t=target", "--out", str(tmp_path / "out"), "--no-plots", "--level", "0.9"]) == 0
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    w = data["test_sets"]["t"]["statistics"]["wer"]
    assert w["p_after_better"] == 0.5 and w["abs_change"]["low"] <= 0 <= w["abs_change"]["high"]
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "no clear change (90% CI of the change includes 0)" in md and "| WER before [90% CI] |" in md
    assert "no significant change on the target" in md
    assert not (tmp_path / "out" / "plots").exists()


def test_mismatched_utterances_and_bad_roles_are_named(exp, tmp_path, capsys):
    after = exp / "eval" / "after" / "test_us"
    rows = (after / "hyp.jsonl").read_text().splitlines()
    gone = json.loads(rows[3])["id"]
    (after / "hyp.jsonl").write_text("\n".join(rows[:3] + rows[4:]) + "\n")
    assert report(exp, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"'{gone}'" in err and "test_us" in err and "missing from" in err
    shutil.rmtree(exp / "eval" / "after" / "test_us")
    shutil.rmtree(exp / "eval" / "before" / "test_us")
    assert report(exp, tmp_path / "out") == 2
    assert "--role names test set(s) ['test_us']" in capsys.readouterr().err
    assert main(["report", "--before", str(exp / "eval" / "before"), "--after", str(exp / "eval" / "after"),
                 "--role", "test_caribbean=targt", "--out", str(tmp_path / "o")]) == 2
    assert "expected SET=ROLE" in capsys.readouterr().err


def test_set_evaluated_only_before_is_listed_without_statistics(exp, tmp_path):
    shutil.rmtree(exp / "eval" / "after" / "test_hand")
    out = tmp_path / "out"
    assert report(exp, out) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["test_sets"]["test_hand"]["after"] is None and data["test_sets"]["test_hand"]["statistics"] is None
    cells = row_of((out / "RESULTS.md").read_text(), "| test_hand | test |")
    assert cells[5] == "–" and cells[8] == "–"


def test_one_speaker_falls_back_to_utterances_and_one_utterance_cannot_tell(tmp_path):
    utts = make_utterances({"solo": "x"}, per_speaker=6, seed=2)
    write_eval(tmp_path / "before" / "t", utts, hypotheses(utts, {"solo": 0.4}, 1))
    write_eval(tmp_path / "after" / "t", utts, hypotheses(utts, {"solo": 0.1}, 2))
    write_eval(tmp_path / "before" / "u", utts[:1], {utts[0].id: "wrong words"})
    write_eval(tmp_path / "after" / "u", utts[:1], {utts[0].id: utts[0].text})
    assert main(["report", "--before", str(tmp_path / "before"), "--after", str(tmp_path / "after"),
                 "--role", "t=target", "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    w = data["test_sets"]["t"]["statistics"]["wer"]
    assert w["block_unit"] == "utterance" and w["blocks"] == 6 and w["abs_change"]["low"] is not None
    fs = data["forgetting"]
    assert fs["source_damage"] is None and fs["score"] == fs["target_gain"]
    assert fs["score"]["value"] == pytest.approx((w["before"]["value"] - w["after"]["value"]) / w["before"]["value"])
    single = data["test_sets"]["u"]["statistics"]["wer"]
    assert single["blocks"] == 1 and single["p_after_better"] is None and single["abs_change"]["low"] is None
    md = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "(target, 1 speaker, 6 utterances)" in md
    assert "The interval resamples the utterances of its one speaker" in md
    assert "| t | target | 6 | 1 † |" in md and "† one speaker only" in md
    assert "**u** (test, 1 speaker, 1 utterance)" in md and "cannot tell (too little data to resample)" in md
    assert "No source/general set was evaluated before and after, so the score is the target gain alone." in md
