"""The adaptation methods, one entry each (after ESPnet's ``espnet2/layers/create_adapter.py``).

A training config names a method and, under the method's own name, its settings::

    method: lora
    lora: {rank: 16, alpha: 32, dropout: 0.05, targets: [], stacks: []}

    method: adapters
    adapters: {size: 64, stacks: []}

    method: freeze
    freeze: [decoder]            # freeze's settings are the list of parts it freezes

    method: full                 # no settings

Each entry says what its settings are (a dataclass, ``list`` for a list of names, or ``None``), whether
the method trains an adapter beside frozen base weights, how to build that adapter
(:class:`~speechtl.adapt.adapters.LoraSpec` / ``BottleneckSpec``), and whether WiSE-FT can scale its
update. :mod:`speechtl.adapt.config` reads and checks the blocks from these entries, and every other
module asks the registry, so adding a method is one entry here.

No torch at module level: loading a config stays cheap (the adapter specs are imported when built).

>>> get("dora").adapter, get("freeze").settings is list, sorted(ADAPTER_METHODS)
(True, True, ['adapters', 'dora', 'lora'])
>>> get("lora").settings(rank=8).problems()
[]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass
class LoraSettings:
    """The ``lora:`` (and ``dora:``) block."""

    rank: int = field(default=16, metadata={"help": "rank r of each update B @ A"})
    alpha: float = field(default=32.0, metadata={"help": "PEFT's lora_alpha: the update is scaled by alpha / rank"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the adapter's input, in [0, 1)"})
    targets: list[str] = field(default_factory=list, metadata={
        "help": "module names adapted (suffixes); empty: the family's default (attention and feed-forward)"})
    stacks: list[str] = field(default_factory=list, metadata={
        "help": "stacks whose targets are adapted (encoder, decoder); empty: all. An accent is mostly acoustic: "
                "encoder-only LoRA leaves the decoder's language knowledge as it was"})

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for each bad value (empty when all are good)."""
        out = []
        if self.rank < 1:
            out.append(("rank", "must be at least 1"))
        if not self.alpha > 0:
            out.append(("alpha", f"must be positive, got {self.alpha}"))
        if not 0.0 <= self.dropout < 1.0:
            out.append(("dropout", f"must lie in [0, 1), got {self.dropout}"))
        return out


@dataclass
class AdapterSettings:
    """The ``adapters:`` block: residual bottleneck adapters (:mod:`speechtl.adapt.bottleneck`)."""

    size: int = field(default=64, metadata={"help": "bottleneck width of each residual adapter"})
    stacks: list[str] = field(default_factory=list, metadata={
        "help": "stacks that get an adapter after each block (encoder, decoder); empty: all"})

    def problems(self) -> list[tuple[str, str]]:
        return [("size", "must be at least 1")] if self.size < 1 else []


def _lora_spec(s: LoraSettings, use_dora: bool = False) -> Any:
    from speechtl.adapt.adapters import LoraSpec

    return LoraSpec(rank=s.rank, alpha=s.alpha, dropout=s.dropout, targets=tuple(s.targets), stacks=tuple(s.stacks),
                    use_dora=use_dora)


def _bottleneck_spec(s: AdapterSettings) -> Any:
    from speechtl.adapt.adapters import BottleneckSpec

    return BottleneckSpec(size=s.size, stacks=tuple(s.stacks))


@dataclass(frozen=True)
class Method:
    """One adaptation method; see the module docstring."""

    name: str
    help: str
    #: The type of its settings block: a dataclass, ``list`` (a list of names), or None (no block).
    settings: type | None = None
    #: Builds the adapter spec from the settings; None: the method trains the model's own weights.
    spec: Callable[[Any], Any] | None = None
    #: What WiSE-FT (``wise_alpha``) scales, in words; empty: it can't (``no_wise`` says why).
    update: str = ""
    no_wise: str = ""
    #: Flat keys of configs from before the blocks, and the setting each one now is.
    old_keys: dict[str, str] = field(default_factory=dict)

    @property
    def adapter(self) -> bool:
        """Whether it trains an adapter beside frozen base weights (saved and exported on its own)."""
        return self.spec is not None

    def default_settings(self) -> Any:
        return None if self.settings is None else self.settings()

    def build_spec(self, settings: Any) -> Any:
        if self.spec is None:
            raise ValueError(f"method '{self.name}' trains the model's own weights: it has no adapter")
        return self.spec(settings)


REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("full", "train every weight", update="(adapted − base) weights"),
    Method("freeze", "train every weight but the parts listed in its block: encoder, decoder, feature_encoder, "
                     "encoder.layers.N, encoder.layers.:N (the first N)",
           settings=list, update="(adapted − base) weights"),
    Method("lora", "LoRA through PEFT: a low-rank update B @ A beside frozen weights", settings=LoraSettings,
           spec=_lora_spec, update="each LoRA update B·A",
           old_keys={"lora_rank": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout",
                     "lora_targets": "targets", "lora_stacks": "stacks"}),
    Method("dora", "DoRA (PEFT's use_dora): LoRA's direction update plus a learned magnitude per output",
           settings=LoraSettings, spec=lambda s: _lora_spec(s, use_dora=True),
           no_wise="DoRA rescales each output row of W0 + s·B@A to a learned magnitude, so its change to the "
                   "model is not linear in B and no DoRA adapter keeps exactly alpha of it; train with "
                   "wise_alpha: 1.0, or use method lora"),
    Method("adapters", "residual bottleneck adapters after each block, beside frozen weights",
           settings=AdapterSettings, spec=_bottleneck_spec, update="each bottleneck adapter's residual output",
           old_keys={"adapter_size": "size", "adapter_stacks": "stacks"}),
)}

METHODS: tuple[str, ...] = tuple(REGISTRY)
#: Methods that train a small adapter beside frozen base weights (saved and exported on their own).
ADAPTER_METHODS: tuple[str, ...] = tuple(n for n, m in REGISTRY.items() if m.adapter)


def get(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}'; known: {', '.join(METHODS)}") from None


def old_key(key: str) -> tuple[Method, str] | None:
    """The method and setting a flat key of an old config (``lora_rank``) became, or None."""
    for m in REGISTRY.values():
        if key in m.old_keys:
            return m, m.old_keys[key]
    return None


def new_form(key: str, value: Any) -> str:
    """How old flat ``key: value`` is written now, in YAML's flow style: ``lora: {rank: 16}``."""
    method, setting = old_key(key)  # type: ignore[misc]
    return f"{method.name}: " + yaml.safe_dump({setting: value}, default_flow_style=True, sort_keys=False).strip()


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """An old config (flat keys, as an old run's ``config.yaml`` or ``train_key.json`` holds it) in today's form.

    Old configs carried every method's flat keys whatever the method; only the chosen method's are kept, as
    its block, so an old run compares equal to the same run written today.
    """
    out = {k: v for k, v in config.items() if old_key(k) is None}
    m = REGISTRY.get(out.get("method", "full"))
    if m is not None and m.old_keys and m.name not in out:
        defaults = m.default_settings()
        out[m.name] = {s: config.get(k, getattr(defaults, s)) for k, s in m.old_keys.items()}
    if m is not None and m.settings is None:
        out.pop(m.name, None)
    if out.get("method", "full") != "freeze" and out.get("freeze") == []:
        out.pop("freeze")
    return out
