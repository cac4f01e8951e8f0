"""Speaker-disjoint, accent-stratified, seeded splits; filters that count; the summary beside the manifests."""

import json

import pytest

from speechtl.data.manifest import ManifestError, Utterance
from speechtl.data.splits import (
    check_speaker_disjoint,
    drop_shared_speakers,
    filter_utterances,
    make_text_disjoint,
    parse_fractions,
    speaker_overlaps,
    split_by_speaker,
    write_summary,
)

FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}


def corpus(speakers_per_accent: dict[str, int], utts: int = 5, seconds: float = 2.0) -> list[Utterance]:
    return [Utterance(id=f"{acc}-{s}-{i}", audio=f"{acc}-{s}-{i}.wav", duration=seconds, text="some words",
                      speaker=f"{acc}-{s}", accent=acc)
            for acc, n in speakers_per_accent.items() for s in range(n) for i in range(utts)]


def speakers(utts):
    return {u.speaker for u in utts}


def test_split_is_speaker_disjoint_stratified_and_seeded():
    utts = corpus({"scottish": 20, "welsh": 10, "irish": 4, "rare": 2})
    sets = split_by_speaker(utts, FRACTIONS, seed=3)
    assert speaker_overlaps(sets) == []
    assert sum(len(v) for v in sets.values()) == len(utts)
    for accent, n in (("scottish", 20), ("welsh", 10), ("irish", 4)):
        per = {name: len({u.speaker for u in v if u.accent == accent}) for name, v in sets.items()}
        assert min(per.values()) >= 1, (accent, per)  # every accent with speakers enough reaches every split
        assert per["train"] >= n // 2 and per["train"] >= max(per["dev"], per["test"])
    rare = {name: speakers(u for u in v if u.accent == "rare") for name, v in sets.items()}
    assert sum(map(len, rare.values())) == 2 and max(map(len, rare.values())) <= 2
    assert split_by_speaker(list(reversed(utts)), FRACTIONS, seed=3) == sets  # input order does not matter
    other = split_by_speaker(utts, FRACTIONS, seed=4)
    assert {k: speakers(v) for k, v in other.items()} != {k: speakers(v) for k, v in sets.items()}


def test_split_balances_hours_and_adding_an_accent_leaves_the_others_alone():
    # one talkative speaker must not drag the test set's hours far above its share
    utts = corpus({"a": 30}, utts=2) + corpus({"b": 1}, utts=60)
    sets = split_by_speaker(utts, FRACTIONS, seed=1)
    hours = {k: sum(u.duration for u in v if u.accent == "a") for k, v in sets.items()}
    assert hours["train"] > 2 * (hours["dev"] + hours["test"])
    before = {k: speakers(u for u in v if u.accent == "a") for k, v in sets.items()}
    after = split_by_speaker(utts + corpus({"c": 5}), FRACTIONS, seed=1)
    assert {k: speakers(u for u in v if u.accent == "a") for k, v in after.items()} == before


def test_many_one_speaker_accents_still_add_up_to_the_fractions():
    sets = split_by_speaker(corpus({f"accent{i:02d}": 1 for i in range(60)}), FRACTIONS, seed=1)
    assert [len(speakers(sets[k])) for k in FRACTIONS] == [48, 6, 6]
    tiny = split_by_speaker(corpus({"a": 1, "b": 1, "c": 2}), FRACTIONS, seed=1)
    assert all(tiny.values())  # four speakers in three thin accents: still one speaker in every split


def test_groups_never_straddle_splits():
    utts = corpus({"x": 12})
    conv = {u.speaker: f"conv{int(u.speaker.split('-')[1]) // 2}" for u in utts}  # two speakers per conversation
    sets = split_by_speaker(utts, {"train": 0.7, "dev": 0.3}, seed=2, group_of=lambda u: conv[u.speaker])
    where = {}
    for name, us in sets.items():
        for u in us:
            assert where.setdefault(conv[u.speaker], name) == name


def test_text_disjoint_sets_keep_only_their_own_prompts():
    utts = [Utterance(id=f"{s}-{p}", audio="a.wav", duration=1.0, text=f"prompt {p}", speaker=f"s{s}", accent="x",
                      meta={"prompt": f"p{p}"}) for s in range(8) for p in range(20)]
    sets = split_by_speaker(utts, FRACTIONS, seed=5)
    dropped = make_text_disjoint(sets, lambda u: u.meta["prompt"], FRACTIONS, seed=5)
    prompts = {k: {u.meta["prompt"] for u in v} for k, v in sets.items()}
    assert [len(prompts[k]) for k in FRACTIONS] == [16, 2, 2]
    assert not prompts["train"] & prompts["dev"] and not prompts["train"] & prompts["test"]
    assert sum(dropped.values()) + sum(map(len, sets.values())) == len(utts)
    assert speaker_overlaps(sets) == []


def test_check_and_drop_shared_speakers():
    a, b = corpus({"x": 3}), corpus({"x": 2})
    with pytest.raises(ManifestError, match=r"not speaker-disjoint: test & train: \['x-0', 'x-1'\]"):
        check_speaker_disjoint({"train": a, "test": b}, where="here")
    sets = {"train": list(a), "test": list(b)}
    assert drop_shared_speakers(sets, ("test", "train")) == {"train": 10}
    assert speakers(sets["train"]) == {"x-2"} and len(sets["test"]) == len(b)  # the official test set stays whole


def test_filters_count_every_reason(caplog):
    utts = corpus({"x": 1}, utts=4)
    utts[0].text = "  "
    utts[1].duration = 45.0
    utts[2].duration = 0.05
    kept, report = filter_utterances(utts, min_duration=0.1, max_duration=30.0, what="toy")
    assert [u.id for u in kept] == ["x-0-3"]
    assert report.dropped == {"empty_text": 1, "longer_than_30s": 1, "shorter_than_0.1s": 1} and report.kept == 1
    assert "toy: kept 1, dropped 1 (empty_text), 1 (longer_than_30s), 1 (shorter_than_0.1s)" in caplog.text


def test_summary_counts_hours_utterances_speakers_per_accent(tmp_path):
    sets = split_by_speaker(corpus({"a": 10, "b": 10}, utts=3, seconds=60.0), FRACTIONS, seed=1)
    write_summary(tmp_path, sets, {"seed": 1})
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["seed"] == 1
    train = data["sets"]["train"]
    assert train["all"]["utterances"] == len(sets["train"])
    assert train["a"]["speakers"] + train["b"]["speakers"] == train["all"]["speakers"]
    assert train["a"]["hours"] == pytest.approx(train["a"]["utterances"] / 60)
    tsv = (tmp_path / "summary.tsv").read_text().splitlines()
    assert tsv[0] == "set\taccent\thours\tutterances\tspeakers" and len(tsv) == 1 + 3 * 3


@pytest.mark.parametrize("text, error", [("0.8,0.1", "must be 3 numbers"), ("0.8,0.3,0.1", "must sum to 1"),
                                         ("a,b,c", "must be 3 numbers"), ("1.2,-0.1,-0.1", ">= 0")])
def test_bad_fractions(text, error):
    assert parse_fractions("0.7,0.1,0.2") == {"train": 0.7, "dev": 0.1, "test": 0.2}
    with pytest.raises(ValueError, match=error):
        parse_fractions(text)
