"""L2-ARCTIC on a miniature with the real layout: speaker folders, transcripts, annotations, suitcase corpus."""

import json

import pytest
from corpus_miniatures import L2ARCTIC_L1, assert_speaker_disjoint, make_l2arctic, read_sets, tree

from speechtl.cli import main
from speechtl.data.corpora.l2arctic import prepare_l2arctic
from speechtl.data.manifest import ManifestError


def test_each_l1_is_split_by_speaker_and_prompt_with_metadata_and_the_suitcase_apart(tmp_path):
    src = make_l2arctic(tmp_path / "L2ARCTIC", l1s=("hindi", "arabic"), per_speaker=6)
    out = tmp_path / "data"
    sets = read_sets(prepare_l2arctic(src, out))
    assert set(sets) == {"train", "dev", "test", "suitcase"}
    assert_speaker_disjoint(sets, ("train", "dev", "test"))
    prompts = {k: {u.meta["prompt"] for u in sets[k]} for k in ("train", "dev", "test")}
    assert not prompts["train"] & (prompts["dev"] | prompts["test"]) and not prompts["dev"] & prompts["test"]
    for l1 in ("hindi", "arabic"):
        per = {k: {u.speaker for u in sets[k] if u.accent == l1} for k in ("train", "dev", "test")}
        assert [len(per[k]) for k in ("train", "dev", "test")] == [2, 1, 1]
        assert set().union(*per.values()) == set(L2ARCTIC_L1[l1])
    u = next(u for us in sets.values() for u in us if u.speaker == "ASI" and u.meta.get("annotated"))
    assert (u.id, u.accent, u.text) == ("ASI-arctic_a0001", "hindi", "not at this particular case tom")
    assert u.meta == {"corpus": "l2arctic", "gender": "M", "l1": "hindi", "prompt": "arctic_a0001", "annotated": True}
    assert u.audio == str(src / "ASI" / "wav" / "arctic_a0001.wav") and u.duration == pytest.approx(0.35)
    assert {u.speaker for u in sets["suitcase"]} == set(L2ARCTIC_L1["hindi"] + L2ARCTIC_L1["arabic"]) - {"ASI", "SKA"}
    assert all(u.meta["subset"] == "suitcase" and u.id.endswith("-suitcase") for u in sets["suitcase"])
    summary = json.loads((out / "summary.json").read_text())
    n = len([u for u in sets["train"] if u.accent == "hindi"])
    assert summary["sets"]["train"]["hindi"]["utterances"] == n == 2 * len(prompts["train"])
    assert summary["speaker_disjoint"] == ["train", "dev", "test"] and summary["prompts"] == "disjoint across sets"
    shared = read_sets(prepare_l2arctic(src, tmp_path / "shared", shared_prompts=True))
    assert len(shared["train"]) == 4 * 6 and len(shared["test"]) == 2 * 6  # every recording kept


def test_accent_selection_rerun_noop_and_nothing_written_outside_out(tmp_path):
    src = make_l2arctic(tmp_path / "L2ARCTIC", l1s=("hindi", "korean"), per_speaker=3)
    out = tmp_path / "exp" / "data"
    before = tree(tmp_path)
    manifests = prepare_l2arctic(src, out, accents=["Hindi"])
    assert {u.accent for us in read_sets(manifests).values() for u in us} == {"hindi"}
    after = tree(tmp_path, skip=out)
    assert {k: v for k, v in after.items() if k not in ("exp", "exp/data")} == before
    stamps = tree(out)
    assert prepare_l2arctic(src, out, accents=["hindi"]) == manifests
    assert tree(out) == stamps
    prepare_l2arctic(src, out, accents=["hindi", "korean"])  # other options: prepared again
    assert {u.accent for u in read_sets(manifests)["train"]} == {"hindi", "korean"}


def test_wrong_layouts_are_clear_errors(tmp_path):
    src = make_l2arctic(tmp_path / "L2ARCTIC", l1s=("spanish",), per_speaker=2)
    (src / "NJS" / "transcript" / "arctic_a0002.txt").unlink()
    with pytest.raises(ManifestError, match=r"NJS/transcript: no transcript for 1 of 2 wav files \(arctic_a0002.wav\)"):
        prepare_l2arctic(src, tmp_path / "out")
    (src / "NJS" / "transcript" / "arctic_a0002.txt").write_text("back again")
    with pytest.raises(ManifestError, match=r"set\(s\) \['test'\] of l2arctic came out empty"):
        prepare_l2arctic(src, tmp_path / "out")  # 2 prompts can't be dealt out to 3 sets
    (src / "XYZ" / "wav").mkdir(parents=True)
    with pytest.raises(ManifestError, match="unknown L2-ARCTIC speaker 'XYZ'"):
        prepare_l2arctic(src, tmp_path / "out")
    with pytest.raises(ManifestError, match="unknown L2-ARCTIC L1"):
        prepare_l2arctic(src, tmp_path / "out", accents=["klingon"])
    assert not (tmp_path / "out").exists()  # a failed run leaves nothing behind
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError, match="no L2-ARCTIC speaker folders"):
        prepare_l2arctic(empty, tmp_path / "out")
    with pytest.raises(ManifestError, match="no such folder; download L2-ARCTIC from https://psi"):
        prepare_l2arctic(tmp_path / "nowhere", tmp_path / "out")


def test_cli_prepare_l2arctic(tmp_path, capsys):
    src = make_l2arctic(tmp_path / "L2ARCTIC", l1s=("vietnamese",), per_speaker=3)
    args = ["prepare", "l2arctic", "--src", str(src), "--out", str(tmp_path / "data"), "--accents", "vietnamese",
            "--seed", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "train: " in printed and "suitcase: " in printed
    assert_speaker_disjoint(read_sets({k: tmp_path / "data" / f"{k}.jsonl" for k in ("train", "dev", "test")}))
    assert "vietnamese" in (tmp_path / "data" / "prepare.log").read_text()
    assert main([*args[:-2], "--fractions", "0.5,0.5"]) == 2
    assert "error: --fractions: split fractions '0.5,0.5' must be 3 numbers" in capsys.readouterr().err
