"""The experiment dir: one statement of the layout; a shared base evaluation is each experiment's own base."""

import json
import shutil

from fabricate_eval import hypotheses, make_utterances, write_eval, write_experiment

from speechtl.cli import main
from speechtl.layout import ExperimentDir, model_dirs, train_dir_of

SPK = {"car_a": "caribbean", "car_b": "caribbean", "car_c": "caribbean"}


def test_paths_and_links(tmp_path):
    exp = ExperimentDir(tmp_path / "exp")
    assert exp.model == tmp_path / "exp" / "train" / "model" and exp.after == tmp_path / "exp" / "eval" / "after"
    assert exp.before is None and not exp.is_experiment()
    shared = tmp_path / "before"
    shared.mkdir()
    exp.link_before(shared)
    assert json.loads(exp.before_link.read_text()) == {"path": "../../before"}  # relative: the tree can move
    assert exp.before == shared.resolve() and exp.is_experiment()
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved)
    assert ExperimentDir(moved / "exp").before == (moved / "before").resolve()
    (exp.eval / "before").mkdir()
    assert exp.before == exp.eval / "before"  # its own evaluations win
    exp.link_before(exp.eval / "before")  # linking to its own dir is nothing to record
    assert ExperimentDir.of_train_dir(exp.train) == exp and ExperimentDir.of_train_dir(tmp_path) is None


def test_train_and_model_dirs(tmp_path):
    exp = ExperimentDir(tmp_path / "exp")
    exp.train.mkdir(parents=True)
    assert train_dir_of(exp.path) == exp.train
    (exp.train / "summary.json").write_text("{}")
    assert train_dir_of(exp.path) == exp.train and train_dir_of(exp.train) == exp.train
    assert exp.read_summary() == {}
    assert model_dirs(exp.path) == [exp.path, exp.path / "model", exp.model]


def test_a_recipes_shared_base_evaluation_is_the_base_of_each_experiment(tmp_path):
    """A recipe evaluates the base once (EXP_ROOT/before/<set>/); the report links it into each experiment, and
    compare lists it once, as the base of both, with each experiment's forgetting score against it."""
    car = make_utterances(SPK, per_speaker=6, seed=0)
    base = hypotheses(car, {s: 0.4 for s in SPK}, 2)
    before = write_eval(tmp_path / "before" / "test_caribbean", car, base, "openai/whisper-tiny.en")
    exps = []
    for name, rate, seed in (("lora", 0.2, 4), ("full", 0.1, 6)):
        exp = write_experiment(tmp_path / name, {"test_caribbean": (car, base, hypotheses(car, {s: rate for s in SPK},
                                                                                             seed))}, method=name)
        shutil.rmtree(exp / "eval" / "before")  # as a recipe lays it out: the base evaluated once, outside
        assert main(["report", "--before", str(before.parent), "--after", str(exp / "eval" / "after"), "--train",
                     str(exp / "train"), "--role", "test_caribbean=target", "--out", str(exp), "--n-boot", "50",
                     "--no-plots"]) == 0
        assert ExperimentDir(exp).before == before.parent.resolve()
        exps.append(exp)
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, exps), "--base-label", "whisper-tiny.en (base)", "--out", str(out),
                 "--n-boot", "50", "--no-plots"]) == 0
    data = json.loads((out / "compare.json").read_text())
    base = [s for s in data["systems"] if s["kind"] == "base"]
    assert len(base) == 1 and base[0]["label"] == "whisper-tiny.en (base)" and base[0]["base_of"] == ["lora", "full"]
    assert not [s for s in data["systems"] if s["kind"] == "external"]
    assert set(data["forgetting"]) == {"lora", "full"}
