"""The eleven accent recipes: stage 0 on miniatures of their corpora gives the manifests the later stages need,
writes nothing outside the experiment dir, and runs again as a no-op. Their Whisper configs are valid."""

import os
import subprocess
import sys
from pathlib import Path

import corpus_miniatures as mini
import pytest

from speechtl.adapt.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# recipe: (the sets stage 0 must write, the corpora it reads)
EXPECTED = {
    "nigerian_english": (["test"], ["afrispeech"]),
    "indian_english": (["test", "test_svarah"], ["l2arctic", "svarah"]),
    "scottish_english": (["test", "test_vctk"], ["dialects", "vctk"]),
    "irish_english": (["test"], ["dialects"]),
    "welsh_english": (["test"], ["dialects"]),
    "mandarin_l1_english": (["test", "test_speechocean762"], ["l2arctic", "speechocean762"]),
    "spanish_l1_english": (["test"], ["l2arctic"]),
    "arabic_l1_english": (["test"], ["l2arctic"]),
    "korean_l1_english": (["test"], ["l2arctic"]),
    "vietnamese_l1_english": (["test"], ["l2arctic"]),
    "edacc_english": (["test"], ["edacc"]),
}
ENV = {"afrispeech": "AFRISPEECH_SRC", "l2arctic": "L2ARCTIC_DIR", "svarah": "SVARAH_SRC", "dialects": "DIALECTS_SRC",
       "vctk": "VCTK_DIR", "speechocean762": "SPEECHOCEAN_SRC", "edacc": "EDACC_SRC"}


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One miniature of every corpus, shared (read-only) by all recipe tests."""
    root = tmp_path_factory.mktemp("corpora")
    return {"afrispeech": mini.make_afrispeech(root / "afrispeech200"),
            "l2arctic": mini.make_l2arctic(root / "L2ARCTIC", l1s=tuple(mini.L2ARCTIC_L1), per_speaker=6),
            "svarah": mini.make_svarah(root / "svarah"),
            "dialects": mini.make_english_dialects(root / "english_dialects"),
            "vctk": mini.make_vctk(root / "VCTK-Corpus-0.92"),
            "speechocean762": mini.make_speechocean762(root / "speechocean762"),
            "edacc": mini.make_edacc(root / "edacc")}


def stage0(recipe: str, exp: Path, sources: dict[str, Path]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", HF_HOME=str(exp.parent / "hf_home"),  # must stay absent: nothing cached outside
               **{ENV[c]: str(sources[c]) for c in EXPECTED[recipe][1]})
    return subprocess.run(["bash", str(RECIPES / recipe / "run.sh"), "--stage", "0", "--stop-stage", "0",
                           "--exp", str(exp)], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", EXPECTED)
def test_stage0_on_miniatures(recipe, sources, tmp_path):
    tests, _ = EXPECTED[recipe]
    exp = tmp_path / "exp"
    recipe_before, sources_before = mini.tree(RECIPES / recipe), mini.tree(sources["l2arctic"].parent)
    res = stage0(recipe, exp, sources)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    data = exp / "data"
    sets = mini.read_sets({name: data / f"{name}.jsonl" for name in ["train", "dev", *tests]})
    mini.assert_speaker_disjoint(sets)
    assert all(sets.values())
    assert mini.tree(RECIPES / recipe) == recipe_before and mini.tree(sources["l2arctic"].parent) == sources_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no hf_home: datasets cached nothing elsewhere
    assert {p.name for p in exp.iterdir()} == {"data", "commands.txt", "timings.tsv"}  # the template's own files
    assert (data / "summary.tsv").is_file()
    if recipe == "indian_english":  # two corpora in one folder: a second run changes nothing
        stamps = {k: v for k, v in mini.tree(data).items() if k != "prepare.log"}
        res = stage0(recipe, exp, sources)
        assert res.returncode == 0, res.stderr[-3000:]
        assert {k: v for k, v in mini.tree(data).items() if k != "prepare.log"} == stamps
        assert (data / "prepare.log").read_text().count("already prepared with these options") == 2


def test_stage0_without_the_local_corpus_says_what_to_set(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("L2ARCTIC_DIR", None)
    res = subprocess.run(["bash", str(RECIPES / "korean_l1_english" / "local" / "data.sh"), str(tmp_path / "d")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode != 0 and "set L2ARCTIC_DIR to your copy of L2-ARCTIC (see README.md)" in res.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("recipe", EXPECTED)
def test_recipe_has_a_valid_whisper_config_and_a_readme_with_licence_and_source(recipe):
    cfg = load_config(RECIPES / recipe / "conf" / "whisper.yaml")
    assert cfg.max_steps >= 100 and cfg.eval_every <= cfg.max_steps and cfg.batch_size == 16
    assert cfg.mixed_precision == "auto" and (cfg.method == "full" or cfg.settings == ["decoder"])
    readme = (RECIPES / recipe / "README.md").read_text()
    for corpus in EXPECTED[recipe][1]:
        assert f"`{ENV[corpus]}`" in readme
    assert "licence" in readme and "GPU settings" in readme and "CC BY" in readme + "Apache"
    assert os.access(RECIPES / recipe / "run.sh", os.X_OK) and os.access(RECIPES / recipe / "local" / "data.sh",
                                                                           os.X_OK)
