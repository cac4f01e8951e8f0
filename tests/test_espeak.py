from pathlib import Path

import pytest

from speechtl.data.corpora.espeak import load_spec, plan, prepare_espeak
from speechtl.data.manifest import ManifestError, read_manifest

SPEC = Path(__file__).parent / "data" / "tiny_espeak.yaml"
RECIPE_SPEC = Path(__file__).parents[1] / "recipes" / "synthetic_caribbean" / "conf" / "data.yaml"


def test_prepare_writes_disjoint_validated_sets_and_reruns_as_noop(espeak, tmp_path):
    out = tmp_path / "data"
    manifests = prepare_espeak(SPEC, out)
    sets = {name: read_manifest(p) for name, p in manifests.items()}
    assert {k: len(v) for k, v in sets.items()} == {"train": 8, "dev": 2, "test_caribbean": 4, "test_us": 4}
    speakers = {k: {u.speaker for u in v} for k, v in sets.items()}
    assert speakers["train"].isdisjoint(speakers["dev"] | speakers["test_caribbean"] | speakers["test_us"])
    texts = {k: {u.text for u in v} for k, v in sets.items()}
    assert texts["train"].isdisjoint(texts["dev"] | texts["test_caribbean"])
    assert texts["test_caribbean"] == texts["test_us"]  # same sentences, other accent: a clean comparison
    u = sets["train"][0]
    assert u.accent == "caribbean" and u.meta["voice"] == "en-029+m3" and 0.5 < u.duration < 10
    assert Path(u.audio).is_relative_to(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    prepare_espeak(SPEC, out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == stamps


def test_recipe_spec_is_speaker_and_sentence_disjoint():
    planned = plan(load_spec(RECIPE_SPEC))
    spk = {k: {r.name for _, r, _ in v} for k, v in planned.items()}
    sent = {k: {t for _, _, t in v} for k, v in planned.items()}
    names = list(planned)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert spk[a].isdisjoint(spk[b])
    assert sent["train"].isdisjoint(sent["dev"] | sent["test_caribbean"] | sent["test_us"])
    assert sent["dev"].isdisjoint(sent["test_caribbean"])
    assert len(sent["train"]) >= 400 and len(spk["train"]) >= 5
    words = {w.strip(".,?!'").lower() for s in sent["train"] for w in s.split()}
    assert len(words) > 1500  # a broad vocabulary, not a handful of prompts


def test_spec_errors(tmp_path):
    spec = SPEC.read_text().replace("speakers: [car_b]", "speakers: [car_a]")
    (tmp_path / "s.yaml").write_text(spec)
    (tmp_path / "tiny_sentences.txt").write_text((SPEC.parent / "tiny_sentences.txt").read_text())
    with pytest.raises(ManifestError, match="not be speaker-disjoint"):
        prepare_espeak(tmp_path / "s.yaml", tmp_path / "out")
    (tmp_path / "s.yaml").write_text(SPEC.read_text().replace("train: 8", "train: 80"))
    with pytest.raises(ManifestError, match="pools need 86 sentences, the file has 16"):
        prepare_espeak(tmp_path / "s.yaml", tmp_path / "out")
    (tmp_path / "s.yaml").write_text(SPEC.read_text().replace("seed: 3", "seed: 3\ncolour: red"))
    with pytest.raises(ManifestError, match="unknown key"):
        load_spec(tmp_path / "s.yaml")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.jsonl"))
