"""Training configuration: one typed dataclass, loaded from YAML, every key checked.

A typo in a config must not silently fall back to a default, so unknown keys and wrong types are
errors that name the file and line (nested keys dotted: ``conf.yaml:4: 'lora.rank' must be at least 1``).

The method's settings are a block under its name (``method: lora`` with ``lora: {rank: 16}``), read from
its entry in :mod:`speechtl.adapt.registry`; a block for another method is an error, and so is an old
flat key (``lora_rank``), whose message shows the new form.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speechtl.adapt import registry
from speechtl.errors import SpeechtlError
from speechtl.features.augment import AugmentConfig, yaml_key_lines

METHODS = registry.METHODS
ADAPTER_METHODS = registry.ADAPTER_METHODS
SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "no", "fp16", "bf16")
TARGET_STYLES = ("model", "as_is")


class ConfigError(SpeechtlError):
    pass


@dataclass
class GateConfig:
    """How the confidence gate's threshold is chosen after training (:mod:`speechtl.models.gate`).

    The threshold is on the base model's confidence in its own transcript; utterances under it go to the
    adapter. Three ways to set it, most informed first:

    - ``weight`` > 0 (needs ``dev_general``): the threshold that minimises ``(1 - w) * target dev WER +
      w * general dev WER`` of the gated system, as ``select_weight`` chooses checkpoints;
    - otherwise ``base_share``: the base model keeps at most this share of the *target* dev utterances, those
      it is most confident of (the threshold is the ``1 - base_share`` quantile of its confidence there). It
      needs no general speech: speech the base model is surer of than of most of the accent goes to the base;
    - ``threshold``: a fixed value, no calibration.
    """

    base_share: float = 0.15
    weight: float = 0.0
    threshold: float | None = None
    max_compression_ratio: float = 2.4

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not 0.0 < self.base_share < 1.0:
            out.append(("base_share", f"must lie in (0, 1), got {self.base_share}"))
        if not 0.0 <= self.weight <= 1.0:
            out.append(("weight", f"must lie in [0, 1], got {self.weight}"))
        if not self.max_compression_ratio > 0:
            out.append(("max_compression_ratio", f"must be positive, got {self.max_compression_ratio}"))
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "config", lines: dict[str, int] | None = None) -> GateConfig:
        """Check a ``gate:`` mapping (every key, its type and range), naming ``where:line`` on error."""
        return _read_block("gate", cls, data, where, lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig:
    """Every choice a training run makes; the resolved copy is written to the experiment dir."""

    method: str = field(default="full", metadata={
        "help": "; ".join(f"{m.name}: {m.help}" for m in registry.REGISTRY.values())
                + ". Its settings are the block under its name (lora: {rank: 8}), see speechtl.adapt.registry"})
    settings: Any = field(default=None, metadata={
        "help": "the method's settings: its dataclass (or a mapping of its keys), the list of parts for freeze, "
                "None for full; None for another method means its defaults. Written under the method's name"})
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.98)
    lr_scheduler: str = field(default="linear", metadata={"help": "linear | cosine | constant (after warm-up)"})
    warmup_steps: int = 50
    max_steps: int = 500
    batch_size: int = field(default=8, metadata={"help": "utterances per device per micro-batch"})
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    min_duration: float = 0.0
    max_duration: float = 30.0
    eval_every: int = field(default=100, metadata={"help": "steps between dev evaluations (0: only at the end)"})
    eval_batch_size: int = 16
    eval_max_utts: int = field(default=0, metadata={"help": "decode only the first N dev utterances (0: all)"})
    save_every: int = field(default=50, metadata={"help": "steps between resumable checkpoints"})
    log_every: int = 10
    seed: int = 42
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto (bf16/fp16 on GPU, fp32 on CPU) | no | fp16 | bf16"})
    gradient_checkpointing: bool = False
    num_workers: int = 0
    model_settings: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "model config settings for training, e.g. SpecAugment: {mask_time_prob: 0.05, mask_time_length: 10}"})
    augment: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "on-the-fly augmentation of the training (target-accent) audio: blocks speed, reverb, noise, volume "
                "(see speechtl.features.augment.AugmentConfig); replay, dev and test audio are never augmented"})
    distill_weight: float = field(default=0.0, metadata={
        "help": "w >= 0: loss = task loss + w * T^2 * KL(base model || adapted) on the positions the loss counts "
                "(learning without forgetting); 0: off"})
    distill_temperature: float = field(default=1.0, metadata={
        "help": "T > 0: both distributions are softened as softmax(logits / T) for the distillation term"})
    distill_teacher_context: str = field(default="same", metadata={
        "help": "Whisper: same: the teacher reads the student's batch; full: the teacher reads it at the full 30 s "
                "audio context while the student trains at its own (dynamic) one, so the student learns to write "
                "at the short context what the base writes at 30 s (FUTO's audio-context fine-tuning, within LwF)"})
    replay_manifest: str = field(default="", metadata={
        "help": "manifest of general (source-domain) speech mixed into every training batch (needs replay_fraction)"})
    replay_fraction: float = field(default=0.0, metadata={
        "help": "share in [0, 1) of each batch drawn from replay_manifest: round(fraction * batch_size) utterances"})
    target_style: str = field(default="model", metadata={
        "help": "model: train on transcripts put in the form the pretrained model writes (Whisper: an all-capitals "
                "unpunctuated corpus gets sentence case and end punctuation) | as_is: the corpus's own form"})
    wise_alpha: float = field(default=1.0, metadata={
        "help": "WiSE-FT: the final model keeps this share of the best model's update, base + alpha * (adapted - "
                "base), for every method (full/freeze: the trained weights; lora: B @ A; adapters: each "
                "residual's output); 1.0 keeps the adapted model"})
    dev_general: str = field(default="", metadata={
        "help": "manifest of general (non-target) dev speech, decoded at each evaluation beside the target dev "
                "set; never the general *test* set, or that test no longer measures forgetting"})
    select_weight: float = field(default=0.0, metadata={
        "help": "w in [0, 1]: the best checkpoint minimises (1 - w) * target dev WER + w * general dev WER "
                "(needs dev_general); 0 chooses on the target dev WER alone"})
    gate: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "a confidence gate calibrated after training (adapter methods): the base model decodes first and "
                "keeps the utterances it is sure of, the adapter takes the rest; {base_share, weight, threshold, "
                "max_compression_ratio}, see speechtl.adapt.config.GateConfig; {} (default): no gate"})

    def __post_init__(self) -> None:
        """A method's settings default to its defaults; given as a mapping, they become its dataclass."""
        m = registry.REGISTRY.get(self.method)
        if m is None or m.settings is None:
            return
        if self.settings is None:
            self.settings = m.default_settings()
        elif isinstance(self.settings, dict) and m.settings is not list:
            self.settings = m.settings(**self.settings)

    @property
    def entry(self) -> registry.Method:
        """The method's registry entry."""
        return registry.get(self.method)

    @property
    def frozen(self) -> list[str]:
        """The parts method freeze freezes (empty for any other method)."""
        return list(self.settings) if self.method == "freeze" else []

    def method_block(self) -> dict[str, Any]:
        """The method's settings as YAML writes them, under its name (``{"lora": {"rank": 16, ...}}``); {} for full."""
        s = self.settings
        if s is None:
            return {}
        return {self.method: dataclasses.asdict(s) if dataclasses.is_dataclass(s) else copy.deepcopy(list(s))}

    def validate(self, where: str = "config", lines: dict[str, int] | None = None) -> None:
        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{_at(where, lines, key)}: '{key}' {msg}")

        if self.method not in METHODS:
            raise bad("method", f"must be one of {', '.join(METHODS)}, got '{self.method}'")
        m = self.entry
        if m.settings is None and self.settings is not None:
            raise bad("settings", f"method {m.name} has no settings, got {self.settings!r}")
        if m.settings is list:
            if not isinstance(self.settings, list) or not all(isinstance(x, str) for x in self.settings):
                raise bad(m.name, f"must be a list of names, got {self.settings!r}")
            if not self.settings:
                raise bad(m.name, f"must name at least one part when method is {m.name}")
        elif m.settings is not None:
            if not isinstance(self.settings, m.settings):
                raise bad(m.name, f"must be a {m.settings.__name__}, got {type(self.settings).__name__}")
            for key, msg in self.settings.problems():
                raise bad(f"{m.name}.{key}", msg)
        if self.wise_alpha < 1.0 and m.no_wise:
            raise bad("wise_alpha", f"{self.wise_alpha} can't be used with method {m.name}: {m.no_wise}")
        if self.target_style not in TARGET_STYLES:
            raise bad("target_style", f"must be one of {', '.join(TARGET_STYLES)}, got '{self.target_style}'")
        if self.lr_scheduler not in SCHEDULERS:
            raise bad("lr_scheduler", f"must be one of {', '.join(SCHEDULERS)}")
        if self.mixed_precision not in PRECISIONS:
            raise bad("mixed_precision", f"must be one of {', '.join(PRECISIONS)}")
        for key in ("max_steps", "batch_size", "grad_accum", "eval_batch_size", "log_every", "save_every"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        for key in ("warmup_steps", "eval_every", "eval_max_utts", "num_workers"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be positive")
        if not 0.0 < self.wise_alpha <= 1.0:
            raise bad("wise_alpha", f"must lie in (0, 1], got {self.wise_alpha}")
        if not 0.0 <= self.select_weight <= 1.0:
            raise bad("select_weight", f"must lie in [0, 1], got {self.select_weight}")
        if self.select_weight > 0 and not self.dev_general:
            raise bad("select_weight", "needs dev_general: the general-speech dev manifest it weighs in")
        if self.dev_general and not Path(self.dev_general).is_file():
            raise bad("dev_general", f"names {self.dev_general}, which is not a file; prepare that manifest "
                                     "first or fix the path")
        if self.max_duration <= self.min_duration:
            raise bad("max_duration", "must be larger than min_duration")
        if self.gate:
            gate = GateConfig.from_dict(self.gate, where, lines)
            if self.method not in ADAPTER_METHODS:
                raise bad("gate", f"needs an adapter method ({', '.join(ADAPTER_METHODS)}): the gate falls back on "
                                  f"the base model, which method {self.method} does not keep")
            if gate.weight > 0 and not self.dev_general:
                raise bad("gate", "weight > 0 weighs in the general dev WER: it needs dev_general")
        self._validate_forgetting_controls(bad)

    def _validate_forgetting_controls(self, bad: Callable[[str, str], ConfigError]) -> None:
        if not self.distill_weight >= 0.0:
            raise bad("distill_weight", f"must be >= 0, got {self.distill_weight}")
        if not self.distill_temperature > 0.0:
            raise bad("distill_temperature", f"must be positive, got {self.distill_temperature}")
        if self.distill_teacher_context not in ("same", "full"):
            raise bad("distill_teacher_context", f"must be 'same' or 'full', got {self.distill_teacher_context!r}")
        if self.distill_teacher_context == "full" and not self.distill_weight > 0:
            raise bad("distill_teacher_context", "full is the distillation teacher's context: it needs distill_weight "
                      "> 0")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise bad("replay_fraction", f"must lie in [0, 1), got {self.replay_fraction}")
        if self.replay_fraction > 0 and not self.replay_manifest:
            raise bad("replay_fraction", "needs replay_manifest: the manifest replay utterances are drawn from")
        if self.replay_manifest and self.replay_fraction == 0:
            raise bad("replay_manifest", "is only used with replay_fraction > 0 (the share of each batch it fills)")
        if self.replay_manifest and not Path(self.replay_manifest).is_file():
            raise bad("replay_manifest", f"names {self.replay_manifest}, which is not a file (relative paths are "
                                         f"read from the working dir, {os.getcwd()})")
        share = self.replay_per_batch
        if self.replay_fraction > 0 and not 0 < share < self.batch_size:
            raise bad("replay_fraction", f"{self.replay_fraction} of batch_size {self.batch_size} gives {share} replay "
                                         "utterance(s) a batch; it must give at least one and leave one for training")

    @property
    def replay_per_batch(self) -> int:
        """Replay utterances in each micro-batch of ``batch_size`` (the rest are training utterances)."""
        return round(self.replay_fraction * self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML writes it: ``method``, then its settings under its name, then the rest."""
        out: dict[str, Any] = {"method": self.method, **self.method_block()}
        out.update({f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
                    if f.name not in ("method", "settings")})
        out["adam_betas"] = list(self.adam_betas)
        return out


def _coerce(key: str, value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if typ in (int, float, str, bool):
        if isinstance(value, bool) != (typ is bool) or not isinstance(value, typ):
            raise ConfigError(f"{where}: '{key}' must be {typ.__name__}, got {type(value).__name__} {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: '{key}' must be a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(typ)
        inner = args[0]
        if origin is tuple and len(value) != len(args):
            raise ConfigError(f"{where}: '{key}' must have {len(args)} items")
        return origin(_coerce(key, v, inner, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        for t in typing.get_args(typ):
            if t is type(None) and value is None:
                return None
        return _coerce(key, value, next(t for t in typing.get_args(typ) if t is not type(None)), where)
    return value


def _at(where: str, lines: dict[str, int] | None, path: str) -> str:
    """``where:line`` of dotted key ``path``, or of its nearest parent with a line."""
    while path:
        if lines and path in lines:
            return f"{where}:{lines[path]}"
        path = path.rpartition(".")[0]
    return where


def _read_settings(m: registry.Method, value: Any, where: str, lines: dict[str, int] | None, start: Any) -> Any:
    """Method ``m``'s block as the YAML gives it, checked key by key over ``start`` (or the defaults)."""
    if m.settings is list:
        return _coerce(m.name, value, list[str], _at(where, lines, m.name))
    return _read_block(m.name, m.settings, {} if value is None else value, where, lines, start)  # `lora:`: defaults


def _read_block(name: str, cls: Any, value: Any, where: str, lines: dict[str, int] | None, start: Any = None) -> Any:
    """A settings block ``name`` (a dataclass ``cls`` with ``problems()``) from YAML's mapping, over ``start`` (or
    the defaults): unknown keys, wrong types and bad values are errors at ``where:line`` of the dotted key."""
    hints = typing.get_type_hints(cls)
    if not isinstance(value, dict):
        raise ConfigError(f"{_at(where, lines, name)}: '{name}' must be a mapping of its settings "
                          f"({', '.join(hints)}), got {type(value).__name__} {value!r}")
    values = dataclasses.asdict(start) if start is not None else {}
    for key, v in value.items():
        path = f"{name}.{key}"
        if key not in hints:
            raise ConfigError(f"{_at(where, lines, path)}: unknown key '{path}' ({name} has {', '.join(hints)})")
        values[key] = _coerce(path, v, hints[key], _at(where, lines, path))
    block = cls(**values)
    for key, msg in block.problems():
        path = f"{name}.{key}"
        raise ConfigError(f"{_at(where, lines, path)}: '{path}' {msg}")
    return block


def config_from_dict(data: dict[str, Any], where: str = "config", lines: dict[str, int] | None = None,
                     base: TrainConfig | None = None) -> TrainConfig:
    """A config from YAML's mapping (over ``base``, for overrides): every key checked, errors at their lines."""
    hints = {k: t for k, t in typing.get_type_hints(TrainConfig).items() if k != "settings"}
    values = {f.name: copy.deepcopy(getattr(base, f.name)) for f in dataclasses.fields(base)} if base else {}
    blocks: dict[str, Any] = {}  # method name -> its settings block as given
    for key, value in data.items():
        at = _at(where, lines, key)
        m = registry.REGISTRY.get(key)
        if m is not None and m.settings is not None:
            blocks[key] = value
            continue
        if registry.old_key(key):
            raise ConfigError(f"{at}: '{key}' is now written '{registry.new_form(key, value)}' (a method's settings "
                              "are a block under its name; see speechtl.adapt.registry)")
        if key not in hints:
            close = [k for k in [*hints, *registry.METHODS] if k.startswith(key[:4])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{at}: unknown key '{key}'{hint}")
        values[key] = _coerce(key, value, hints[key], at)
        if key == "augment":  # nested blocks: checked (and defaults filled in) where their lines are known
            values[key] = AugmentConfig.from_dict(values[key], where, lines).to_dict()
        if key == "gate" and values[key]:
            values[key] = GateConfig.from_dict(values[key], where, lines).to_dict()
    method = values.get("method", "full")
    if method not in registry.METHODS:
        raise ConfigError(f"{_at(where, lines, 'method')}: 'method' must be one of {', '.join(METHODS)}, "
                          f"got '{method}'")
    for name in blocks:
        if name != method:
            raise ConfigError(f"{_at(where, lines, name)}: '{name}' is only used with method: {name} "
                              f"(method is '{method}')")
    start = values.get("settings") if base is not None and base.method == method else None
    if method in blocks:
        values["settings"] = _read_settings(registry.get(method), blocks[method], where, lines, start)
    else:
        values["settings"] = start  # None: the method's defaults
    cfg = TrainConfig(**values)
    cfg.validate(where, lines)
    return cfg


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load ``path`` (YAML) then apply ``key=value`` overrides (values parsed as YAML).

    A dotted key sets one key of a block: ``lora.rank=8``, ``augment.speed.prob=0.5``; the rest of the
    block stays as the config has it.
    """
    cfg = TrainConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            text = path.read_text(encoding="utf-8")
            node = yaml.compose(text)
            data = yaml.safe_load(text) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values")
        lines = yaml_key_lines(node)  # top-level keys, and nested ones as dotted paths (augment.speed.prob)
        cfg = config_from_dict(data, str(path), lines)
    if overrides:
        data, lines = {}, {}
        for i, item in enumerate(overrides, 1):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override '{item}' must look like key=value")
            value = yaml.safe_load(raw)
            head, _, rest = key.partition(".")
            lines[key] = i
            if not rest:
                data[key] = value
                continue
            lines.setdefault(head, i)
            if head not in data:  # a mapping field starts from the config's own (a method's block merges later)
                own = getattr(cfg, head, None) if head not in registry.REGISTRY else None
                data[head] = copy.deepcopy(own) if isinstance(own, dict) else {}
            node = data[head]
            *parents, last = rest.split(".")
            for part in parents:
                node = node.setdefault(part, {}) if isinstance(node, dict) else node
            if not isinstance(node, dict):
                raise ConfigError(f"--set:{i}: '{key}': {key.rpartition('.')[0]} is not a mapping")
            node[last] = value
        cfg = config_from_dict(data, "--set", lines, base=cfg)
    return cfg


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
