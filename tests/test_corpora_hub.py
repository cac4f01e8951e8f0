"""Hub corpora (AfriSpeech, British Isles dialects, EdAcc, Svarah, speechocean762) from local copies laid out
like the Hub's: the columns and parquet metadata of the real datasets, a few tenths of a second of audio a row."""

import json
import os
import subprocess
import sys
from pathlib import Path

import corpus_miniatures as mini
import pyarrow.parquet as pq
import pytest

from speechtl.data.corpora.afrispeech import prepare_afrispeech
from speechtl.data.corpora.common import PrepareOptions
from speechtl.data.corpora.edacc import prepare_edacc
from speechtl.data.corpora.english_dialects import prepare_english_dialects
from speechtl.data.corpora.speechocean762 import prepare_speechocean762
from speechtl.data.corpora.svarah import prepare_svarah
from speechtl.data.manifest import ManifestError

# corpus: (miniature builder, prepare, the sets it writes, a column to break)
CORPORA = {
    "afrispeech": (mini.make_afrispeech, prepare_afrispeech, {"train", "dev", "test"}, "transcript"),
    "english_dialects": (mini.make_english_dialects, prepare_english_dialects, {"train", "dev", "test"}, "speaker_id"),
    "edacc": (mini.make_edacc, prepare_edacc, {"train", "dev", "test"}, "speaker"),
    "svarah": (mini.make_svarah, prepare_svarah, {"test"}, "primary_language"),
    "speechocean762": (mini.make_speechocean762, prepare_speechocean762, {"train", "dev", "test"}, "text"),
}


def every(sets):
    return [u for us in sets.values() for u in us]


@pytest.mark.parametrize("name", CORPORA)
def test_manifests_disjoint_audio_inside_out_rerun_noop(name, tmp_path):
    build, prepare, expected, _ = CORPORA[name]
    src = build(tmp_path / name)
    out = tmp_path / "data"
    before = mini.tree(tmp_path)
    manifests = prepare(str(src), out)
    sets = mini.read_sets(manifests)
    assert set(sets) == expected
    mini.assert_speaker_disjoint(sets)
    for u in every(sets):
        assert Path(u.audio).is_relative_to(out / "audio") and 0.3 < u.duration < 0.6, u
        assert u.text and "<" not in u.text and u.meta["corpus"] == name
    assert json.loads((out / "summary.json").read_text())["sets"].keys() == expected
    assert not (out / ".hf_cache").exists()
    assert {k: v for k, v in mini.tree(tmp_path, skip=out).items() if k != "data"} == before
    stamps = mini.tree(out)
    assert prepare(str(src), out) == manifests
    assert mini.tree(out) == stamps


def _break_column(src: Path, column: str) -> None:
    """Rename a column in every data file, as a copy of some other dataset would have it."""
    import datasets

    if (src / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(src)).rename_column(column, "something_else")
        dd.save_to_disk(str(src.with_name("broken")))
        src.rename(src.with_name("old"))
        src.with_name("broken").rename(src)
        return
    for f in src.rglob("*.parquet"):
        t = pq.read_table(f).replace_schema_metadata(None)
        pq.write_table(t.rename_columns(["something_else" if c == column else c for c in t.column_names]), f)


@pytest.mark.parametrize("name", CORPORA)
def test_wrong_column_is_named_with_the_file(name, tmp_path):
    build, prepare, _, column = CORPORA[name]
    src = build(tmp_path / name)
    _break_column(src, column)
    with pytest.raises(ManifestError, match=rf"{src}.* row 0: column\(s\) \['{column}'\] missing") as e:
        prepare(str(src), tmp_path / "out")
    assert "something_else" in str(e.value)
    assert not list((tmp_path / "out").glob("*.jsonl"))


def test_afrispeech_selection_metadata_and_official_splits(tmp_path, caplog):
    src = mini.make_afrispeech(tmp_path / "afrispeech200")
    sets = mini.read_sets(prepare_afrispeech(str(src), tmp_path / "ng", countries=["ng"]))
    assert {u.meta["country"] for u in every(sets)} == {"NG"}
    assert {u.speaker for u in sets["test"]} == {"spk_ng5", "spk_ng1"}  # the official test set stays whole
    assert "spk_ng1" not in {u.speaker for u in sets["train"]}
    assert "train: dropped 2 utterances of speakers already in test" in caplog.text
    assert "train: kept 5, dropped 1 (empty_text)" in caplog.text
    u = next(u for u in sets["test"] if u.speaker == "spk_ng5")
    assert (u.accent, u.meta["domain"], u.meta["age_group"], u.meta["gender"]) == ("yoruba", "clinical", "26-40",
                                                                                  "Female")
    summary = json.loads((tmp_path / "ng" / "summary.json").read_text())
    assert summary["dropped_for_speaker_overlap"] == {"train": 2} and summary["splits"] == "official"
    assert summary["filtered"]["dropped"] == {"empty_text": 1}
    with pytest.raises(ManifestError, match=r"set\(s\) \['dev'\] of afrispeech came out empty.*add --resplit"):
        prepare_afrispeech(str(src), tmp_path / "clin", domain="clinical", countries=["NG"])  # dev has no clinical
    clinical = mini.read_sets(prepare_afrispeech(str(src), tmp_path / "clin", domain="clinical", resplit=True))
    mini.assert_speaker_disjoint(clinical)
    assert {u.meta["domain"] for u in every(clinical)} == {"clinical"}
    assert {u.accent for u in every(clinical)} == {"yoruba", "igbo", "swahili"}


def test_english_dialects_config_folders_tell_the_dialect(tmp_path):
    src = mini.make_english_dialects(tmp_path / "english_dialects")
    sets = mini.read_sets(prepare_english_dialects(str(src), tmp_path / "scot", dialects=["Scottish"]))
    assert {u.accent for u in every(sets)} == {"scottish"}
    assert all(len({u.speaker for u in us}) >= 1 for us in sets.values())  # 4 speakers: 2/1/1
    u = every(sets)[0]
    assert u.speaker.startswith("scottish_") and u.meta["gender"] in ("female", "male") and u.meta["line_id"]
    lines = {k: {u.meta["line_id"] for u in v} for k, v in sets.items()}
    assert not lines["train"] & lines["test"] and not lines["train"] & lines["dev"]  # no sentence seen in training
    shared = mini.read_sets(prepare_english_dialects(str(src), tmp_path / "all", ["scottish"], shared_text=True))
    assert sum(map(len, shared.values())) == 4 * 4 > sum(map(len, sets.values()))
    with pytest.raises(ManifestError, match=r"no rows for dialect\(s\) \['midlands'\].*midlands_female, midlands_male"):
        prepare_english_dialects(str(src), tmp_path / "mid", dialects=["midlands"])
    with pytest.raises(ManifestError, match="unknown dialect"):
        prepare_english_dialects(str(src), tmp_path / "x", dialects=["cornish"])
    # the parquet converter's layout, <config>/<split>/0000.parquet, reads the same
    conv = tmp_path / "converted"
    for f in src.rglob("*.parquet"):
        (conv / f.parent.name / "train").mkdir(parents=True)
        f.rename(conv / f.parent.name / "train" / "0000.parquet")
    again = mini.read_sets(prepare_english_dialects(str(conv), tmp_path / "scot2", dialects=["scottish"]))
    assert {k: [u.id for u in v] for k, v in again.items()} == {k: [u.id for u in v] for k, v in sets.items()}


def test_edacc_carves_train_dev_by_conversation_and_cleans_text(tmp_path, caplog):
    src = mini.make_edacc(tmp_path / "edacc")
    sets = mini.read_sets(prepare_edacc(str(src), tmp_path / "data"))
    assert {u.meta["conversation"] for u in sets["test"]} == {"EDACC-C06", "EDACC-C07"}
    convs = {k: {u.meta["conversation"] for u in v} for k, v in sets.items()}
    assert not convs["train"] & convs["dev"] and convs["train"] | convs["dev"] == {f"EDACC-C0{i}" for i in range(1, 6)}
    u = sets["test"][0]
    assert u.text in mini.SENTENCES and u.meta["raw_text"].endswith("<laugh>") and u.meta["l1"]
    assert "validation: kept 20, dropped 1 (empty_text)" in caplog.text  # the IGNORE_TIME_SEGMENT row


def test_svarah_and_speechocean762_metadata(tmp_path):
    svarah = mini.read_sets(prepare_svarah(str(mini.make_svarah(tmp_path / "svarah")), tmp_path / "sv"))["test"]
    assert {u.accent for u in svarah} == {"hindi", "tamil", "bodo"} and len({u.speaker for u in svarah}) == 3
    assert svarah[0].meta["native_place_state"] and svarah[0].meta["age_group"]
    src = mini.make_speechocean762(tmp_path / "speechocean762")
    so = mini.read_sets(prepare_speechocean762(str(src), tmp_path / "so"))
    assert {u.speaker for u in so["test"]} == {"0100", "0101", "0102", "0103"}
    assert all(u.accent == "mandarin" for u in every(so))
    assert so["test"][0].meta["age"] == 9 and so["test"][0].meta["accuracy"] == 8 and "words" not in so["test"][0].meta
    only = prepare_speechocean762(str(src), tmp_path / "so_test", test_only=True)
    assert list(only) == ["test"]
    assert not (tmp_path / "so_test" / "audio" / "speechocean762" / "default" / "train").exists()


def test_a_second_corpus_shares_out_under_a_suffix(tmp_path):
    out = tmp_path / "data"
    first = prepare_edacc(str(mini.make_edacc(tmp_path / "edacc")), out)
    src = mini.make_svarah(tmp_path / "svarah")
    second = prepare_svarah(str(src), out, opts=PrepareOptions(suffix="svarah"))
    assert list(second) == ["test_svarah"] and second["test_svarah"] == out / "test_svarah.jsonl"
    assert (out / "summary_svarah.tsv").is_file() and (out / ".prepared_svarah.json").is_file()
    assert json.loads((out / "summary.json").read_text())["corpus"] == "edacc"
    stamps = mini.tree(out)
    assert prepare_edacc(str(tmp_path / "edacc"), out) == first
    assert prepare_svarah(str(src), out, opts=PrepareOptions(suffix="svarah")) == second
    assert mini.tree(out) == stamps
    assert {u.accent for u in mini.read_sets(second)["test_svarah"]} == {"hindi", "tamil", "bodo"}


def test_hub_id_without_internet_says_what_to_download_and_writes_nothing_else(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    out = tmp_path / "data"
    res = subprocess.run(["speechtl", "prepare", "edacc", "--out", str(out)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "can't stream edinburghcstr/edacc from the Hugging Face Hub" in res.stderr
    assert "huggingface-cli download --repo-type dataset edinburghcstr/edacc" in res.stderr
    assert not (tmp_path / "hf_home").exists() and not (out / ".hf_cache").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    with pytest.raises(ManifestError, match="no such folder, and not a hub id like ai4bharat/Svarah"):
        prepare_svarah(str(tmp_path / "nope"), out)


def test_the_hub_code_path_streams_the_same_rows(tmp_path):
    """``load_dataset(<repo>, streaming=True)`` as for a hub id, here on a repository laid out on disk."""
    from speechtl.data.corpora import edacc, hub

    src = mini.make_edacc(tmp_path / "edacc")
    parts = hub._hub_parts(edacc.SPEC, str(src), None, tmp_path / "out" / ".hf_cache")
    assert sorted(p.split for p in parts) == ["test", "validation"]
    streamed = sorted((p.split, r["speaker"], r["text"], r["audio"]["path"]) for p in parts for r in p.dataset)
    local = sorted((r.split, r.data["speaker"], r.data["text"], r.data["audio"]["path"])
                   for r in hub.iter_rows(edacc.SPEC, str(src), tmp_path / "out"))
    assert streamed == local and len(local) == 30
    row = next(iter(parts[0].dataset))
    assert isinstance(row["audio"]["bytes"], bytes)  # not decoded by datasets: soundfile reads the bytes
