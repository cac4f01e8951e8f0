"""A training experiment dir and the key of what it was trained with, so a run is skipped or resumed only
under the same inputs.

A run's outcome depends on its resolved config, the base model's weights, the training manifest, and the
dev, general dev and replay manifests that choose its best checkpoint or join its batches. All of them
are written, readable, to ``train_key.json`` when a run starts, with ``key``, a hash of them:

>>> key = TrainKey.of(model, cfg, utts, train_manifest="data/train.jsonl")  # doctest: +SKIP
>>> TrainDir("exp/train").check(key)  # True: finished under key; False: train (afresh or resuming)  # doctest: +SKIP

A dir whose run was made with other inputs is refused (:class:`TrainDirError`, naming what changed)
rather than resumed or returned: ``speechtl train --force`` moves it aside to ``<dir>.old-<time>/``.
Manifests count by content (a sha256 of the file; of the utterances' records when training is given
utterances without a file), the base model by :func:`speechtl.models.model_fingerprint`. Config keys
that only say how a run is carried out (:data:`OPERATIONAL_KEYS`: workers, logging and saving intervals)
are recorded but left out of the key, so a run may resume with more workers.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from speechtl.adapt import registry
from speechtl.adapt.config import TrainConfig
from speechtl.data.manifest import Utterance
from speechtl.errors import SpeechtlError
from speechtl.features.augment import AugmentConfig
from speechtl.io import close_log_files, write_json
from speechtl.models import model_fingerprint
from speechtl.models.base import SpeechModel

LOG = logging.getLogger("speechtl.adapt")

KEY_FILE = "train_key.json"
KEY_VERSION = 1
#: Config keys that say how a run is carried out, not what it computes: a run resumes or is skipped whatever
#: they are (data order does not depend on the workers; logging and saving do not touch the weights).
OPERATIONAL_KEYS = ("num_workers", "log_every", "save_every")
#: Config keys of what is done after training, to the trained model: ``gate`` is calibrated (again) on a finished
#: run (:mod:`speechtl.evaluate.gate`), so changing it does not make the weights stale.
AFTER_TRAINING_KEYS = ("gate",)
#: What a run leaves that a run with other inputs would mix with or overwrite.
OUTPUTS = ("summary.json", "checkpoint", "best", "model", "history.jsonl")
#: Everything a run writes; ``--force`` moves the dir aside when any of them is there.
RUN_FILES = (*OUTPUTS, "config.yaml", KEY_FILE, "env.json")
MANIFEST_NAMES = {"train": "training manifest", "dev": "dev manifest", "dev_general": "general dev manifest",
                  "replay": "replay manifest"}
MAX_CHANGES_SHOWN = 8


class TrainDirError(SpeechtlError):
    """An experiment dir holding a run made with other inputs than the run asked for."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(path: str | os.PathLike) -> dict[str, str]:
    return {"path": str(path), "sha256": _sha256(Path(path).read_bytes())}


def keyed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the key sees it: operational keys out, ``augment`` with its defaults filled in (an
    absent block and ``augment: {}`` are the same augmentation)."""
    out = {k: v for k, v in config.items() if k not in OPERATIONAL_KEYS + AFTER_TRAINING_KEYS}
    try:
        out["augment"] = AugmentConfig.from_dict(out.get("augment") or {}).to_dict()
    except ValueError:  # a block this version no longer reads: it differs from any valid one
        pass
    return out


@dataclass
class TrainKey:
    """The parts a training run depends on, as written to ``train_key.json``."""

    config: dict[str, Any]
    base_model: dict[str, str]
    manifests: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, model: SpeechModel, cfg: TrainConfig, train_utts: Sequence[Utterance],
           train_manifest: str | os.PathLike | None = None,
           dev_manifest: str | os.PathLike | None = None) -> TrainKey:
        """The key of training ``model`` on ``train_utts`` under ``cfg``; ``train_manifest`` is the file
        they were read from (without it, the utterances' records are hashed), ``dev_manifest`` the dev set
        the caller's evaluator decodes."""
        source = model.name_or_path or model.source
        if train_manifest is not None:
            train = {**_manifest(train_manifest), "utterances": len(train_utts)}
        else:
            records = json.dumps([u.to_dict() for u in train_utts], sort_keys=True, ensure_ascii=False)
            train = {"path": None, "sha256": _sha256(records.encode()), "utterances": len(train_utts)}
        manifests: dict[str, dict[str, Any]] = {"train": train}
        if dev_manifest is not None:
            manifests["dev"] = _manifest(dev_manifest)
        if cfg.dev_general:
            manifests["dev_general"] = _manifest(cfg.dev_general)
        if cfg.replay_manifest and cfg.replay_fraction > 0:
            manifests["replay"] = _manifest(cfg.replay_manifest)
        return cls(cfg.to_dict(), {"name_or_path": source, "fingerprint": model_fingerprint(source)}, manifests)

    @property
    def key(self) -> str:
        blob = json.dumps({"config": keyed_config(self.config), "base_model": self.base_model["fingerprint"],
                           "manifests": {k: v["sha256"] for k, v in self.manifests.items()}}, sort_keys=True)
        return _sha256(blob.encode())[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "version": KEY_VERSION, "base_model": self.base_model, "manifests": self.manifests,
                "config": self.config}

    def changes_from(self, old: dict[str, Any]) -> list[str]:
        """What differs from a run's recorded parts (``train_key.json``), one short phrase each."""
        changes = config_changes(old.get("config") or {}, self.config)
        before, now = old.get("base_model") or {}, self.base_model
        if before.get("fingerprint") != now["fingerprint"]:
            changes.append(f"base model {before.get('name_or_path')} -> {now['name_or_path']}"
                           if before.get("name_or_path") != now["name_or_path"]
                           else f"base model {now['name_or_path']} (its weight files changed since)")
        was = old.get("manifests") or {}
        for name in [*self.manifests, *(n for n in was if n not in self.manifests)]:
            a, b = was.get(name), self.manifests.get(name)
            label = MANIFEST_NAMES.get(name, f"{name} manifest")
            if a is None or b is None:
                changes.append(f"{label} {(a or {}).get('path') or 'none'} -> {(b or {}).get('path') or 'none'}")
            elif a["sha256"] != b["sha256"]:
                where = b["path"] if a.get("path") == b["path"] else f"{a.get('path')} -> {b['path']}"
                changes.append(f"{label} {where or '(utterances given in Python)'}: other content")
        return changes


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys dotted; an empty mapping (no augmentation, no model settings) adds no key."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_UNSET = object()


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else json.dumps(value, ensure_ascii=False)


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key old -> new`` for each config key (nested ones dotted, ``augment.speed.prob``) that differs,
    operational keys aside; an old config's missing keys count as their defaults, and its flat method keys
    (``lora_rank``, from before the method blocks) are read as the block they now are."""
    a = _flat(keyed_config({**TrainConfig().to_dict(), **registry.upgrade(old)}))
    b = _flat(keyed_config(new))
    keys = [*b, *(k for k in a if k not in b)]
    return [f"{k} {_show(a.get(k, _UNSET))} -> {_show(b.get(k, _UNSET))}" for k in keys
            if a.get(k, _UNSET) != b.get(k, _UNSET)]


class TrainDir:
    """The experiment dir ``speechtl train`` writes (layout in :mod:`speechtl.adapt.trainer`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    def outputs(self) -> list[str]:
        return [n for n in OUTPUTS if (self.path / n).exists()]

    def check(self, key: TrainKey) -> bool:
        """True when the dir holds a run finished under ``key`` (nothing to do); False when there is no run
        or an unfinished one under ``key`` (train, resuming from ``checkpoint/`` if there is one).

        Raises :class:`TrainDirError` naming what changed when the run there was made with other inputs.
        A run from before ``train_key.json`` existed is taken as this one when its ``config.yaml`` is this
        config (its base model and manifests were not recorded, so can't be checked).
        """
        found = self.outputs()
        if not found:
            return False
        if self.key_file.is_file():
            old = json.loads(self.key_file.read_text(encoding="utf-8"))
            changes = [] if old.get("key") == key.key else key.changes_from(old)
        elif (self.path / "config.yaml").is_file():
            old_config = yaml.safe_load((self.path / "config.yaml").read_text(encoding="utf-8")) or {}
            changes = config_changes(old_config, key.config)
            if not changes:
                LOG.info("%s: a run from before train keys; its config.yaml is this config, so it is taken as this "
                         "run (its base model and manifests were not recorded and are not checked)", self.path)
        else:
            changes = ["no train_key.json or config.yaml says what it was trained with"]
        if changes:
            shown = "; ".join(changes[:MAX_CHANGES_SHOWN])
            more = f"; and {len(changes) - MAX_CHANGES_SHOWN} more" if len(changes) > MAX_CHANGES_SHOWN else ""
            raise TrainDirError(
                f"{self.path}: holds a training run ({', '.join(found)}) made with other inputs: {shown}{more}. "
                f"To keep it and train afresh, run `speechtl train ... --force` (from Python: train(..., force=True)), "
                f"which moves it to {self.path}.old-<time>/, or give another --out")
        return "summary.json" in found

    def write_key(self, key: TrainKey) -> None:
        write_json(self.key_file, key.to_dict())

    def move_aside(self) -> Path | None:
        """Rename the dir to ``<dir>.old-<time>`` when it holds a run (``--force``); nothing is deleted."""
        if not any((self.path / n).exists() for n in RUN_FILES):
            return None
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.old-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.old-{stamp}-{n}")
        close_log_files(self.path)  # the log handlers would follow the files into the old dir
        os.rename(self.path, aside)
        return aside
