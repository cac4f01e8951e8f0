"""speechocean762 as OpenSLR ships it (Kaldi dirs, tab-separated text, wav.scp relative to the corpus root),
and case restoration of all-capitals transcripts into the style Whisper writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tone

from speechtl.data.corpora.speechocean762 import prepare_speechocean762
from speechtl.data.manifest import ManifestError
from speechtl.models.truecase import is_unstyled, restore_case

# (speaker, age, gender) per split; 6 train speakers so that dev can be carved by speaker.
SPEAKERS = {"train": [("0001", 6, "m"), ("0002", 9, "f"), ("0003", 25, "m"), ("0004", 31, "f"), ("0005", 12, "m"),
                      ("0006", 40, "f")],
            "test": [("9601", 25, "m"), ("9602", 8, "f"), ("9603", 19, "m")]}


def make_corpus(root: Path, ext: str = "flac") -> Path:
    for split, speakers in SPEAKERS.items():
        d = root / split
        d.mkdir(parents=True)
        wav, text, u2s, age, gender = [], [], [], [], []
        for k, (spk, a, g) in enumerate(speakers):
            for i in range(2):
                uid = f"0{spk}00{i}{k}"
                rel = f"WAVE/SPEAKER{spk}/{uid}.{ext}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                tone(root / rel, seconds=0.5 + 0.1 * i, freq=200 + 20 * k)
                wav.append(f"{uid} {rel}")
                text.append(f"{uid}\tMARK IS  GOING TO SEE ELEPHANT")  # tab, double space: as the corpus has them
                u2s.append(f"{uid} {spk}")
            age.append(f"{spk} {a}")
            gender.append(f"{spk} {g}")
        for name, lines in (("wav.scp", wav), ("text", text), ("utt2spk", u2s), ("spk2age", age),
                            ("spk2gender", gender)):
            (d / name).write_text("\n".join(lines) + "\n")
    return root


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_kaldi_layout_with_age_groups(tmp_path):
    src = make_corpus(tmp_path / "so762")
    out = prepare_speechocean762(str(src), tmp_path / "data", age_groups=True)
    assert set(out) == {"train", "dev", "test_adults", "test_children"}
    adults, children = read(out["test_adults"]), read(out["test_children"])
    assert {u["speaker"] for u in adults} == {"9601", "9603"}  # 19 is an adult
    assert {u["speaker"] for u in children} == {"9602"}
    first = adults[0]
    assert first["id"] == "so762-9601-096010000" and first["text"] == "MARK IS GOING TO SEE ELEPHANT"
    assert (first["age"], first["gender"], first["accent"]) == (25, "m", "mandarin")
    assert Path(first["audio"]).is_file() and first["duration"] == pytest.approx(0.5)
    train, dev = read(out["train"]), read(out["dev"])
    assert dev and not {u["speaker"] for u in train} & {u["speaker"] for u in dev}
    assert len(train) + len(dev) == 12
    # the same call again is a no-op; without --age-groups the official test set is one manifest
    assert prepare_speechocean762(str(src), tmp_path / "data", age_groups=True) == out
    assert set(prepare_speechocean762(str(src), tmp_path / "all", test_only=True)) == {"test"}


def test_kaldi_layout_wav_files(tmp_path):
    src = make_corpus(tmp_path / "so762", ext="wav")
    out = prepare_speechocean762(str(src), tmp_path / "data", test_only=True)
    assert all(u["audio"].endswith(".wav") for u in read(out["test"]))


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "text").unlink(), r"test/text: required Kaldi file is missing"),
    (lambda d: sorted((d.parent / "WAVE" / "SPEAKER9602").iterdir())[0].unlink(),
     r"test/wav.scp:3: audio file not found"),
    (lambda d: (d / "utt2spk").write_text("096010000 9601\n"), r"test/text:2: utterance '096010010' has no line in "
                                                                r"utt2spk"),
    (lambda d: (d / "spk2age").write_text("9601 old\n"), r"test/spk2age:1: 'old' is not a valid age"),
])
def test_kaldi_layout_errors_name_file_and_line(tmp_path, breakage, message):
    src = make_corpus(tmp_path / "so762")
    breakage(src / "test")
    with pytest.raises(ManifestError, match=message):
        prepare_speechocean762(str(src), tmp_path / "data", test_only=True)


def test_age_groups_need_ages(tmp_path):
    src = make_corpus(tmp_path / "so762")
    (src / "test" / "spk2age").unlink()
    with pytest.raises(ManifestError, match="no age for speaker"):
        prepare_speechocean762(str(src), tmp_path / "data", test_only=True, age_groups=True)


# A byte-level BPE vocabulary's view of a few words: early (frequent) merges have low ids.
VOCAB = {"\u0120John": 1757, "\u0120john": 45610, "\u0120park": 3952, "\u0120Park": 3250, "\u0120London": 3576,
         "\u0120green": 4077, "\u0120Green": 3469, "\u0120Friday": 3217}


@pytest.mark.parametrize("raw, styled", [
    ("WHERE DID JOHN GO", "Where did John go?"),
    ("I'M GOING TO LONDON ON FRIDAY", "I'm going to London on Friday."),
    ("WE WALKED IN THE GREEN PARK", "We walked in the green park."),  # common nouns that are also names
    ("DO THE DISHES", "Do the dishes."),
    ("the cat sat on the mat", "The cat sat on the mat."),  # lower case without punctuation: restored too
    ("Already styled, kept.", "Already styled, kept."),
    ("MR SMITH, HELLO", "MR SMITH, HELLO"),  # punctuated: the corpus chose its form; left alone
])
def test_restore_case(raw, styled):
    assert restore_case(raw, VOCAB) == styled


def test_is_unstyled():
    assert is_unstyled("ZERO THREE FIVE ONE") and not is_unstyled("1 2 3") and not is_unstyled("Mixed Case")


def test_whisper_target_text_and_training_on_styled_targets(tmp_path):
    from helpers import build_tiny_whisper

    from speechtl.adapt.config import TrainConfig
    from speechtl.adapt.trainer import styled_targets
    from speechtl.data.manifest import Utterance
    from speechtl.models.whisper import WhisperASR

    model = WhisperASR.from_pretrained(build_tiny_whisper(tmp_path / "m"))
    utts = [Utterance(id="a", audio="x.wav", duration=1.0, text="THE CAT SAT", speaker="s", accent="x")]
    assert [u.text for u in styled_targets(model, utts, "model")] == ["The cat sat."]
    assert [u.text for u in styled_targets(model, utts, "as_is")] == ["THE CAT SAT"]
    assert utts[0].text == "THE CAT SAT"  # the manifest's records are not touched
    with pytest.raises(Exception, match="target_style"):
        TrainConfig(target_style="upper").validate()
