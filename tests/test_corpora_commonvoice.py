"""Common Voice English on a miniature with the real layout: validated.tsv, clips/*.mp3, clip_durations.tsv."""

import pytest
from corpus_miniatures import CV_ROWS, assert_speaker_disjoint, make_commonvoice, read_sets, tree

from speechtl.data.corpora.commonvoice import prepare_commonvoice
from speechtl.data.manifest import ManifestError

INDIA = "India and South Asia (India, Pakistan, Sri Lanka)"


def test_accent_filter_by_label_speaker_split_and_metadata(tmp_path):
    src = make_commonvoice(tmp_path / "cv-corpus-20.0" / "en")
    out = tmp_path / "data"
    before = tree(tmp_path)
    sets = read_sets(prepare_commonvoice(str(src), out, accents=["scottish english", INDIA]))
    assert_speaker_disjoint(sets)
    utts = [u for us in sets.values() for u in us]
    assert len(utts) == 10 and {u.speaker for u in utts} == {c for c, a in CV_ROWS[:5]}
    assert {u.accent for u in utts} == {"Scottish English", INDIA}
    both = [u for u in utts if u.speaker == CV_ROWS[4][0]]
    assert both[0].accent == INDIA and both[0].meta["accents"] == CV_ROWS[4][1]  # first matching label
    assert utts[0].text.startswith('"') and utts[0].meta["age"] == "twenties"  # quotes are text, not CSV quoting
    assert all(u.duration == pytest.approx(0.5, abs=0.1) and u.audio.endswith(".mp3") for u in utts)
    assert {k: v for k, v in tree(tmp_path, skip=out).items() if k != "data"} == before
    stamps = tree(out)
    prepare_commonvoice(str(src), out, accents=["scottish english", INDIA])
    assert tree(out) == stamps


def test_no_match_lists_the_labels_and_bad_header_names_the_file(tmp_path):
    src = make_commonvoice(tmp_path / "en")
    listed = r"no clip has an accent among \['Welsh English'\]; the most common labels are: 'Scottish English' \(8\)"
    with pytest.raises(ManifestError, match=listed):
        prepare_commonvoice(str(src), tmp_path / "out", accents=["Welsh English"])
    tsv = src / "validated.tsv"
    tsv.write_text(tsv.read_text().replace("client_id", "speaker", 1))
    with pytest.raises(ManifestError, match=r"validated.tsv:1: column\(s\) \['client_id'\] missing"):
        prepare_commonvoice(str(src), tmp_path / "out")
    with pytest.raises(ManifestError, match="no validated.tsv here.*point --src at the folder holding validated.tsv"):
        prepare_commonvoice(str(tmp_path), tmp_path / "out")
