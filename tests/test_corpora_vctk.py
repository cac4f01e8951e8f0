"""VCTK 0.92 on a miniature with the real layout: speaker-info.txt, txt/, wav48_silence_trimmed/ (FLAC, two mics)."""

import pytest
from corpus_miniatures import assert_speaker_disjoint, make_vctk, read_sets, tree

from speechtl.data.corpora.vctk import prepare_vctk
from speechtl.data.manifest import ManifestError


def test_speakers_split_within_accent_with_metadata_and_known_gaps_counted(tmp_path, caplog):
    src = make_vctk(tmp_path / "VCTK-Corpus-0.92")
    out = tmp_path / "data"
    sets = read_sets(prepare_vctk(str(src), out))
    assert_speaker_disjoint(sets)
    scots = {k: {u.speaker for u in v if u.accent == "Scottish"} for k, v in sets.items()}
    assert sorted(len(s) for s in scots.values()) == [1, 1, 2]  # 4 Scottish speakers: 2/1/1
    everyone = {u.speaker for us in sets.values() for u in us}
    assert everyone == {"p225", "p234", "p237", "p241", "p249", "p245"}  # p315 has no text in the release
    assert "skipped 2 audio files without text" in caplog.text
    u = next(u for us in sets.values() for u in us if u.id == "p234_001")
    assert u.audio.endswith("wav48_silence_trimmed/p234/p234_001_mic1.flac")
    assert u.text == "Not at this particular case tom."
    assert u.meta == {"corpus": "vctk", "gender": "F", "age": "22", "region": "West Dumfries"}


def test_scottish_test_only_mic2_and_rerun_noop(tmp_path):
    src = make_vctk(tmp_path / "VCTK-Corpus-0.92")
    out = tmp_path / "data"
    before = tree(src)
    manifests = prepare_vctk(str(src), out, accents=["scottish"], test_only=True, mic="mic2")
    assert list(manifests) == ["test"]
    (test,) = read_sets(manifests).values()
    assert {u.speaker for u in test} == {"p234", "p237", "p241", "p249"} and all("_mic2" in u.audio for u in test)
    assert tree(src) == before
    stamps = tree(out)
    prepare_vctk(str(src), out, accents=["scottish"], test_only=True, mic="mic2")
    assert tree(out) == stamps


def test_unknown_speaker_and_wrong_folder(tmp_path):
    src = make_vctk(tmp_path / "VCTK-Corpus-0.92")
    (src / "wav48_silence_trimmed" / "p999").mkdir()
    with pytest.raises(ManifestError, match=r"speaker\(s\) \['p999'\] are not in .*speaker-info.txt"):
        prepare_vctk(str(src), tmp_path / "out")
    with pytest.raises(ManifestError, match=r"no VCTK utterances with accent\(s\) \['martian'\]"):
        prepare_vctk(str(make_vctk(tmp_path / "v2")), tmp_path / "out2", accents=["martian"])
    with pytest.raises(ManifestError, match="no speaker-info.txt here, nor a saved copy of CSTR-Edinburgh/vctk"):
        prepare_vctk(str(src / "txt"), tmp_path / "out")
    (src / "txt").rename(src / "text")
    (src / "wav48_silence_trimmed" / "p999").rmdir()
    with pytest.raises(ManifestError, match="expected txt/ and wav48_silence_trimmed/"):
        prepare_vctk(str(src), tmp_path / "out")
