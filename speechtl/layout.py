"""The experiment directory: where a run's training, model, evaluations and report live, in one place.

::

    EXP/
      train/                 the training dir (:class:`speechtl.adapt.rundir.TrainDir`): summary.json, model/, …
      eval/before/<set>/     the base model's evaluations (:class:`speechtl.evaluate.evaldir.EvalDir`) …
      eval/before.json       … or where they are, when several experiments share one base evaluation
      eval/after/<set>/      the adapted model's evaluations
      results.json           the report's facts; RESULTS.md its text
      timings.tsv            seconds per recipe stage; commands.txt the commands that made it

The trainer, the model loader, ``export``, ``report``, ``compare`` and the gate's calibration all find their
paths here, so the layout is stated once. A recipe that evaluates the base model once for several methods
(``EXP_ROOT/before/<set>/``) links each experiment to it (``eval/before.json``, written by ``speechtl
report``), and that shared evaluation is then each experiment's own base: ``compare`` lists it once as
the base of all of them (and scores their forgetting against it), not as an outside system.

Paths only: nothing here imports torch or reads a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEFORE, AFTER = "before", "after"
#: In a linked experiment, ``eval/before.json`` holds ``{"path": <the shared before dir, relative to eval/>}``.
BEFORE_LINK = "before.json"


@dataclass(frozen=True)
class ExperimentDir:
    """The paths of one experiment (see the module docstring)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def train(self) -> Path:
        return self.path / "train"

    @property
    def model(self) -> Path:
        return self.train / "model"

    @property
    def summary(self) -> Path:
        return self.train / "summary.json"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def after(self) -> Path:
        return self.eval / AFTER

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def timings(self) -> Path:
        return self.path / "timings.tsv"

    @property
    def before_link(self) -> Path:
        return self.eval / BEFORE_LINK

    @property
    def before(self) -> Path | None:
        """The base model's evaluations: ``eval/before/`` when the experiment has its own, else the shared dir its
        ``eval/before.json`` names; None when it has neither."""
        own = self.eval / BEFORE
        if own.is_dir():
            return own
        if self.before_link.is_file():
            target = json.loads(self.before_link.read_text(encoding="utf-8"))["path"]
            return Path(os.path.normpath(self.eval / target))  # relative when the experiment's path is
        return None

    def link_before(self, shared: str | os.PathLike) -> None:
        """Record that this experiment's base evaluations are ``shared`` (a dir of ``<set>/`` evaluations)."""
        shared = Path(shared).resolve()
        if shared == (self.eval / BEFORE).resolve():
            return
        self.eval.mkdir(parents=True, exist_ok=True)
        from speechtl.io import atomic_write

        with atomic_write(self.before_link) as f:
            f.write(json.dumps({"path": os.path.relpath(shared, self.eval.resolve())}) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        return json.loads(self.summary.read_text(encoding="utf-8")) if self.summary.is_file() else None

    def is_experiment(self) -> bool:
        """Whether anything of an experiment is here (a training dir, or evaluations)."""
        return self.train.is_dir() or self.eval.is_dir()

    @classmethod
    def of_train_dir(cls, train_dir: str | os.PathLike) -> ExperimentDir | None:
        """The experiment a training dir belongs to, when it sits at ``EXP/train``."""
        train_dir = Path(train_dir)
        return cls(train_dir.parent) if train_dir.name == "train" else None


def train_dir_of(path: str | os.PathLike) -> Path:
    """The training dir ``path`` names: an experiment dir (its ``train/``) or a training dir itself (the first of
    the two holding a ``summary.json``; else whichever exists)."""
    path = Path(path)
    train = ExperimentDir(path).train
    for d in (train, path):
        if (d / "summary.json").is_file():
            return d
    return train if train.is_dir() else path


def model_dirs(path: str | os.PathLike) -> list[Path]:
    """Where a model may be under ``path``, most specific first: the dir itself, a training dir's ``model/``, an
    experiment dir's ``train/model/``."""
    path = Path(path)
    return [path, path / "model", ExperimentDir(path).model]
