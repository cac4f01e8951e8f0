"""Named adapters on one model: LoRA (through PEFT) and residual bottleneck adapters, switchable per request.

One :class:`AdapterSet` per :class:`~speechtl.models.base.SpeechModel` holds every adapter put on it,
of either kind, under a name; exactly one is active, or none (the base model). It is what
``speechtl.load_model(base, adapters={...})`` returns the model with, and what training adds its
new adapter to.

An adapter on disk (an *adapter dir*) is PEFT's layout::

    adapter_config.json         PEFT's LoraConfig (LoRA) or this module's bottleneck config
    adapter_model.safetensors   the adapter's weights only, under PEFT's key names
    speechtl_card.json          base model id and the SHA-256 of its weights, family, method, data, WER

so ``peft.PeftModel.from_pretrained(base_module, ADAPTER_DIR)`` loads a LoRA adapter without
speechtl.

An adapter trained on top of an adapted model (a second accent on a first: ``speechtl train --model
FIRST_EXP``) is *stacked*: the first LoRA adapter was folded into the weights before training, so the
new adapter is only right on base + first. Its dir carries copies of what was folded in, in order
(``stacked_on/0``, …), and its card lists them with their weights' SHA-256; loading it folds them in
again first. In plain PEFT: ``PeftModel.from_pretrained(base, "A/stacked_on/0").merge_and_unload()``,
then ``PeftModel.from_pretrained(that, "A")``.

Loading here checks the card's base hash against the base in hand and refuses a
mismatch: an adapter on the wrong base gives plausible-looking nonsense rather than an error.

Example (in a product)::

    >>> import speechtl
    >>> model = speechtl.load_model("openai/whisper-tiny.en",  # doctest: +SKIP
    ...                             adapters={"caribbean": "adapters/car", "scottish": "adapters/sco"})
    >>> model.set_adapter("scottish")  # doctest: +SKIP
    >>> model.disable_adapters()       # the base model alone  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechtl import __version__
from speechtl.adapt import bottleneck
from speechtl.errors import SpeechtlError
from speechtl.io import atomic_write, file_sha256, write_json
from speechtl.layout import model_dirs
from speechtl.models.base import SpeechModel, weights_sha256
from speechtl.models.gate import Gate

LOG = logging.getLogger("speechtl.adapt.adapters")

CONFIG, WEIGHTS, CARD = "adapter_config.json", "adapter_model.safetensors", "speechtl_card.json"
#: Sub-dir of an adapter dir holding the adapters folded into the weights it was trained on, in order.
STACKED = "stacked_on"
#: ``peft_type`` of a bottleneck adapter's config (PEFT has no such tuner: only speechtl loads these).
BOTTLENECK_TYPE = "SPEECHTL_BOTTLENECK"
#: PEFT's key prefix for a model's own parameter names in adapter files.
PEFT_PREFIX = "base_model.model."


class AdapterError(SpeechtlError):
    """An adapter that can't be put on this model; the message says why and what to do."""


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    #: Module-name suffixes to adapt; empty: the model family's :attr:`SpeechModel.lora_targets`.
    targets: tuple[str, ...] = ()
    #: Only the targets inside these stacks of :meth:`SpeechModel.blocks` (``encoder``, ``decoder``); empty: all.
    stacks: tuple[str, ...] = ()
    #: DoRA (PEFT's ``use_dora``): the update's direction is LoRA's, each output row's magnitude learned apart.
    use_dora: bool = False


@dataclass(frozen=True)
class BottleneckSpec:
    size: int = 64
    #: Which stacks of :meth:`SpeechModel.blocks` get adapters; empty: all.
    stacks: tuple[str, ...] = ()


def is_adapter_dir(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / CARD).is_file()


def resolve_adapter_dir(path: str | os.PathLike) -> Path:
    """An adapter dir, or the adapter a LoRA/adapters experiment (``EXP`` or ``EXP/train``) ended with."""
    path = Path(path).expanduser()
    for d in model_dirs(path):
        if is_adapter_dir(d):
            return d
    return path


def read_card(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / CARD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{path / CARD}: can't read the adapter card: {e}") from e


class AdapterSet:
    """The adapters on one model (see the module docstring); attached as ``model.adapters``."""

    def __init__(self, model: SpeechModel) -> None:
        self.model = model
        #: Hash of the weights before any adapter: what every adapter here must have been trained on.
        self.base_sha256 = weights_sha256(model.module)
        self.kinds: dict[str, str] = {}  # name -> "lora" | "bottleneck"
        self.active: str | None = None
        self.peft = None  # the PeftModel around model.module, once a LoRA adapter exists
        self._blocks: dict[str, list[str]] = {}  # bottleneck name -> paths of the blocks it follows
        self.paths: dict[str, Path] = {}  # adapters loaded from disk -> their dirs
        #: LoRA adapters folded into the weights, in order: ``{"dir": Path | None, "weights_sha256": str}``.
        self.merged: list[dict[str, Any]] = []

    @classmethod
    def of(cls, model: SpeechModel) -> AdapterSet:
        """The model's adapter set, created (and the base hashed) on first use."""
        if not isinstance(model.adapters, AdapterSet):
            model.adapters = cls(model)
        return model.adapters

    def names(self) -> list[str]:
        return list(self.kinds)

    # -- adding --------------------------------------------------------------------------------
    def _new_name(self, name: str) -> None:
        if name in self.kinds:
            raise AdapterError(f"an adapter named '{name}' is already loaded ({', '.join(self.kinds)})")
        if not name or "." in name:
            raise AdapterError(f"adapter name {name!r} must be non-empty and have no '.'")

    def _lora_config(self, spec: LoraSpec):
        from peft import LoraConfig

        targets = list(spec.targets or self.model.lora_targets)
        names = [n for n, _ in self.model.module.named_modules()]
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:  # PEFT would skip them silently when others match
            raise AdapterError(f"LoRA targets {missing} match no module of this {self.model.family} model; "
                               f"its defaults are {list(self.model.lora_targets)}")
        if spec.stacks:
            targets = self._in_stacks(targets, spec.stacks)
        return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                          bias="none", use_dora=spec.use_dora, base_model_name_or_path=self.model.name_or_path or None)

    def _in_stacks(self, targets: list[str], stacks: tuple[str, ...]) -> list[str]:
        """The full names of the target modules inside ``stacks``' blocks: PEFT matches a listed name exactly
        (or as a suffix), so the saved ``adapter_config.json`` still loads in plain PEFT."""
        blocks = self.model.blocks()
        unknown = [s for s in stacks if s not in blocks]
        if unknown:
            raise AdapterError(f"LoRA stacks {unknown} unknown; this {self.model.family} model has {list(blocks)}")
        chosen = {id(b) for s in stacks for b in blocks[s]}
        prefixes = tuple(f"{n}." for n, m in self.model.module.named_modules() if id(m) in chosen)
        return [n for n, _ in self.model.module.named_modules()
                if n.startswith(prefixes) and any(n == t or n.endswith("." + t) for t in targets)]

    def add(self, name: str, spec: LoraSpec | BottleneckSpec) -> None:
        """A new adapter (LoRA: PEFT's init, B = 0; bottleneck: up = 0), so the model still equals the base."""
        self._new_name(name)
        if isinstance(spec, LoraSpec):
            self._add_lora(name, config=self._lora_config(spec))
        else:
            self._add_bottleneck(name, spec.size, spec.stacks)
        self.activate(name)

    def _add_lora(self, name: str, config=None, path: Path | None = None) -> None:
        from peft import PeftModel, get_peft_model

        if self.peft is None:
            if path is None:
                self.peft = get_peft_model(self.model.module, config, adapter_name=name)
            else:
                self.peft = PeftModel.from_pretrained(self.model.module, str(path), adapter_name=name)
        elif path is None:
            self.peft.add_adapter(name, config)
        else:
            self.peft.load_adapter(str(path), adapter_name=name)
        self.kinds[name] = "lora"

    def _add_bottleneck(self, name: str, size: int, stacks: tuple[str, ...] | list[str]) -> None:
        blocks = self.model.blocks()
        unknown = [s for s in stacks if s not in blocks]
        if unknown:
            raise AdapterError(f"adapter stacks {unknown} unknown; this {self.model.family} model has {list(blocks)}")
        paths = {id(m): n for n, m in self.model.module.named_modules()}
        chosen = [b for stack, bs in blocks.items() if not stacks or stack in stacks for b in bs]
        for block in chosen:
            bottleneck.add_bottleneck(block, name, self.model.hidden_size, size)
        self._blocks[name] = [paths[id(b)] for b in chosen]
        self.kinds[name] = "bottleneck"

    # -- switching -----------------------------------------------------------------------------
    def _lora_layers_on(self, on: bool) -> None:
        if self.peft is not None:
            if on:
                self.peft.base_model.enable_adapter_layers()
            else:
                self.peft.base_model.disable_adapter_layers()

    def _set_bottleneck(self, name: str | None) -> None:
        for blocks in self.model.blocks().values():
            for block in blocks:
                bottleneck.set_active(block, name)

    def activate(self, name: str) -> None:
        if name not in self.kinds:
            raise AdapterError(f"no adapter named '{name}'; loaded: {', '.join(self.kinds) or 'none'}")
        if self.kinds[name] == "lora":
            self._lora_layers_on(True)
            self.peft.set_adapter(name, inference_mode=True)  # training asks for gradients itself
            self._set_bottleneck(None)
        else:
            self._lora_layers_on(False)
            self._set_bottleneck(name)
        self.active = name

    def disable(self) -> None:
        self._lora_layers_on(False)
        self._set_bottleneck(None)
        self.active = None

    def merge(self, name: str | None = None) -> None:
        """Fold LoRA adapter ``name`` into the weights (PEFT's merge_and_unload); other LoRA adapters go."""
        name = name or self.active
        if name is None:
            raise AdapterError("no adapter is active: name the one to merge")
        if self.kinds.get(name) != "lora":
            raise AdapterError(f"adapter '{name}' is {self.kinds.get(name, 'not loaded')}: only LoRA adapters fold "
                               "into the weights (a bottleneck adapter has a non-linearity); serve it unmerged")
        self.activate(name)
        self.model.module = self.peft.merge_and_unload(adapter_names=[name])
        dropped = [n for n, k in self.kinds.items() if k == "lora" and n != name]
        self.kinds = {n: k for n, k in self.kinds.items() if k != "lora"}
        self.peft, self.active = None, None
        if self.model.gate is not None:  # the base it fell back on is gone
            LOG.info("merged: the confidence gate of %s no longer applies (no base model to fall back on)", name)
            self.model.gate = None
        # the weights are now base + this adapter: what adapters loaded or trained from here on are tied to
        path = self.paths.get(name)
        self.merged.append({"dir": path, "weights_sha256": file_sha256(path / WEIGHTS) if path else None})
        LOG.info("merged adapter '%s' into the weights%s", name,
                 f"; dropped LoRA adapter(s) {', '.join(dropped)}" if dropped else "")

    # -- training ------------------------------------------------------------------------------
    def parameters_of(self, name: str) -> list[tuple[str, nn.Parameter]]:
        kind = self.kinds[name]
        marker = f".{bottleneck.ADAPTERS}.{name}." if kind == "bottleneck" else f".{name}."
        return [(n, p) for n, p in self.model.module.named_parameters()
                if marker in n and (kind == "bottleneck" or ".lora_" in n)]

    def train_only(self, name: str) -> None:
        """Freeze everything but adapter ``name`` (and make it the active one)."""
        self.activate(name)
        for p in self.model.module.parameters():
            p.requires_grad_(False)
        for _, p in self.parameters_of(name):
            p.requires_grad_(True)

    @torch.no_grad()
    def scale(self, name: str, factor: float) -> None:
        """Multiply the change adapter ``name`` makes to the base model by ``factor`` (WiSE-FT's alpha).

        LoRA: each layer's update ``scaling * B @ A`` is linear in B, so B (and its bias, if any) is
        scaled. Scaling the weights rather than PEFT's in-memory ``scaling`` is what survives: the saved
        adapter, plain PEFT loading it, merging and CTranslate2 export all see the scaled update, whereas
        ``scaling`` is recomputed from ``lora_alpha / r`` on every load. Bottleneck: the residual
        ``up(relu(down(norm(h))))`` is linear in ``up`` (see :meth:`Bottleneck.scale_`).
        """
        if self.kinds.get(name) == "bottleneck":
            modules = dict(self.model.module.named_modules())
            for path in self._blocks[name]:
                getattr(modules[path], bottleneck.ADAPTERS)[name].scale_(factor)
            return
        if self.kinds.get(name) != "lora":
            raise AdapterError(f"no adapter named '{name}'; loaded: {', '.join(self.kinds) or 'none'}")
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self.peft.modules() if isinstance(m, LoraLayer)
                  and (name in m.lora_B or name in m.lora_embedding_B)]
        if any(name in m.lora_variant for m in layers):  # DoRA and kin: the update is not linear in B
            raise AdapterError(f"adapter '{name}' is a LoRA variant (DoRA: each output row rescaled to a learned "
                               "magnitude), whose change to the model is not linear in B, so it can't be scaled; "
                               "WiSE-FT (wise_alpha < 1) works with lora, adapters, full and freeze")
        params = [p for m in layers for p in (m.lora_B[name].parameters() if name in m.lora_B
                                              else [m.lora_embedding_B[name]])]
        for p in {id(p): p for p in params}.values():  # a B tied between layers is scaled once
            p.mul_(factor)

    # -- disk ----------------------------------------------------------------------------------
    def state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """Adapter ``name``'s weights under the names its file uses (PEFT's, for LoRA)."""
        if self.kinds[name] == "lora":
            from peft import get_peft_model_state_dict

            return get_peft_model_state_dict(self.peft, adapter_name=name)
        marker = f".{bottleneck.ADAPTERS}.{name}."
        return {n.replace(marker, ".adapter."): p.detach() for n, p in self.parameters_of(name)}

    def save(self, name: str, out_dir: str | os.PathLike, card: Mapping[str, Any]) -> None:
        """Write adapter ``name`` as an adapter dir (see the module docstring)."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict(name).items()}
        save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
        if self.kinds[name] == "lora":
            config = self.peft.peft_config[name]
            inference_mode = config.inference_mode
            config.inference_mode = True
            try:
                config.save_pretrained(str(out))
            finally:
                config.inference_mode = inference_mode
        else:
            write_json(out / CONFIG, {"peft_type": BOTTLENECK_TYPE, "bottleneck_size": _bottleneck_size(self, name),
                                      "hidden_size": self.model.hidden_size, "blocks": self._blocks[name],
                                      "base_model_name_or_path": self.model.name_or_path, "inference_mode": True})
        stacked = self._copy_merged(out)
        write_json(out / CARD, {"format": "speechtl-adapter", "kind": self.kinds[name],
                                "family": self.model.family, "base_model": self.model.name_or_path,
                                "base_sha256": self.base_sha256, **({"stacked_on": stacked} if stacked else {}),
                                "speechtl_version": __version__, **card})

    def _copy_merged(self, out: Path) -> list[dict[str, str]]:
        """Copy the adapters folded into the weights into ``out/stacked_on/<i>``; their card entries."""
        entries = []
        for i, m in enumerate(self.merged):
            if m["dir"] is None:
                raise AdapterError("an adapter that was never saved is folded into these weights, so an adapter "
                                   "trained on them could not be loaded again; save it and load it from its dir")
            sub = out / STACKED / str(i)
            sub.mkdir(parents=True, exist_ok=True)
            for f in (CONFIG, WEIGHTS, CARD):
                if (m["dir"] / f).is_file():
                    shutil.copy2(m["dir"] / f, sub / f)
            entries.append({"dir": f"{STACKED}/{i}", "weights_sha256": m["weights_sha256"]})
        return entries

    def load(self, name: str, path: str | os.PathLike, check_base: bool = True) -> None:
        """Add the adapter in dir ``path`` as ``name``; refuses one trained on other base weights."""
        path = Path(path)
        self._new_name(name)
        if not (path / CONFIG).is_file():
            raise AdapterError(f"{path}: not an adapter dir (no {CONFIG})")
        if not (path / WEIGHTS).is_file():
            raise AdapterError(f"{path}: no {WEIGHTS}; speechtl reads adapters as safetensors only (a pickled "
                               "adapter_model.bin can run code when loaded)")
        self._check_base(path, check_base)
        self.paths[name] = path
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        kind = config.get("peft_type")
        if kind == "LORA":
            self._add_lora(name, path=path)
        elif kind == BOTTLENECK_TYPE:
            self._load_bottleneck(name, path, config)
        else:
            raise AdapterError(f"{path / CONFIG}: adapter type {kind!r} is not supported (LORA or {BOTTLENECK_TYPE})")
        LOG.info("loaded %s adapter '%s' from %s", self.kinds[name], name, path)
        if self.active is None:
            self.activate(name)
        else:
            self.activate(self.active)  # loading must not change which adapter is in use

    def _check_base(self, path: Path, check: bool) -> None:
        if not (path / CARD).is_file():
            LOG.warning("%s has no %s: can't check that it was trained on this base model", path, CARD)
            return
        card = read_card(path)
        expected = card.get("base_sha256")
        chain = [e.get("weights_sha256") for e in card.get("stacked_on", [])]
        folded = [m["weights_sha256"] for m in self.merged]
        msg = ""
        if expected and expected != self.base_sha256:
            msg = (f"{path}: this adapter was trained on {card.get('base_model')!r} with weights SHA-256 "
                   f"{expected[:16]}…, but the base model given ({self.model.source}) has "
                   f"{str(self.base_sha256)[:16]}…. "
                   "Load the base it names; pass check_base=False only if you know the weights are equivalent.")
        elif chain != folded:
            msg = (f"{path}: this adapter was trained with {len(chain)} adapter(s) folded into the base weights "
                   f"(its {STACKED}/), but this model has {len(folded)}{' other ones' if chain and folded else ''}; "
                   "load the adapter dir itself as the model source, which folds in what it needs")
        if msg:
            if check:
                raise AdapterError(msg)
            LOG.warning("%s (check_base=False: loading anyway)", msg)

    def _load_bottleneck(self, name: str, path: Path, config: dict[str, Any]) -> None:
        modules = dict(self.model.module.named_modules())
        missing = [b for b in config["blocks"] if b not in modules]
        if missing:
            raise AdapterError(f"{path}: blocks {missing[:3]} are not in this model")
        if int(config["hidden_size"]) != self.model.hidden_size:
            raise AdapterError(f"{path}: adapter width {config['hidden_size']} != the model's {self.model.hidden_size}")
        for b in config["blocks"]:
            bottleneck.add_bottleneck(modules[b], name, self.model.hidden_size, int(config["bottleneck_size"]))
        self._blocks[name] = list(config["blocks"])
        self.kinds[name] = "bottleneck"
        self.load_weights(name, path)
        for _, p in self.parameters_of(name):
            p.requires_grad_(False)

    def load_weights(self, name: str, path: Path) -> None:
        """Overwrite adapter ``name``'s weights with those saved in ``path`` (e.g. the best checkpoint)."""
        from safetensors.torch import load_file

        state = load_file(str(Path(path) / WEIGHTS))
        if self.kinds[name] == "lora":
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.peft, state, adapter_name=name)
            missing = [k for k in result.missing_keys if ".lora_" in k and f".{name}." in k]
            if missing or result.unexpected_keys:
                raise AdapterError(f"{path / WEIGHTS}: weights don't match adapter '{name}' (missing {missing[:3]}, "
                                   f"unexpected {list(result.unexpected_keys)[:3]})")
            return
        own = dict(self.state_dict(name))
        if set(own) != set(state):
            raise AdapterError(f"{path / WEIGHTS}: weights don't match the config (missing "
                               f"{sorted(set(own) - set(state))[:3]}, unexpected {sorted(set(state) - set(own))[:3]})")
        marker = f".{bottleneck.ADAPTERS}.{name}."
        with torch.no_grad():
            for n, p in self.parameters_of(name):
                p.copy_(state[n.replace(marker, ".adapter.")])


def _bottleneck_size(adapters: AdapterSet, name: str) -> int:
    return next(p.shape[0] for n, p in adapters.parameters_of(name) if n.endswith(".down.weight"))


def load(source: str | os.PathLike, adapters: Mapping[str, str | os.PathLike] | None = None,
         device: str | None = None, check_base: bool = True, **kwargs: Any) -> SpeechModel:
    """:func:`speechtl.models.load_model`, plus adapters: ``source`` may itself be an adapter dir (or an
    experiment dir whose ``model/`` is one), whose card names the base to load."""
    from speechtl.models import load_model

    path = resolve_adapter_dir(str(source))
    own: dict[str, Path] = {}
    if is_adapter_dir(path):
        card = read_card(path)
        if not card.get("base_model"):
            raise AdapterError(f"{path / CARD}: names no base model; load it with speechtl.load_model(BASE, "
                               f"adapters={{'name': '{path}'}})")
        own[card.get("name") or "default"] = path
        source = card["base_model"]
    model = load_model(source, **kwargs)
    if own:  # the settings it was trained with (audio context…): the adapter is only right with them
        settings = card.get("model_settings", {})
        model.base_settings = {k: getattr(model.module.config, k, None) for k in settings}
        model.configure(**settings)
        fold_stacked(model, path, card, check_base)
        if card.get("gate"):
            try:
                model.gate = Gate.from_dict(card["gate"], f"{path / CARD}: gate")
            except ValueError as e:
                raise AdapterError(str(e)) from e
    wanted = {**own, **{k: resolve_adapter_dir(v) for k, v in (adapters or {}).items()}}
    if wanted:
        aset = AdapterSet.of(model)
        for name, adapter_dir in wanted.items():
            aset.load(name, adapter_dir, check_base=check_base)
        model.module.eval()
    if device:
        model.to(device)
    return model


def write_card(path: Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the adapter card at ``path`` (atomically)."""
    card = {**read_card(path), **updates}
    with atomic_write(path / CARD) as f:
        f.write(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return card


def fold_stacked(model: SpeechModel, path: Path, card: Mapping[str, Any], check_base: bool = True) -> None:
    """Fold into ``model`` the adapters that the adapter in ``path`` was trained on top of (its ``stacked_on``)."""
    entries = card.get("stacked_on", [])
    if not entries:
        return
    aset = AdapterSet.of(model)
    for i, entry in enumerate(entries):
        sub = path / entry["dir"]
        if file_sha256(sub / WEIGHTS) != entry["weights_sha256"]:
            raise AdapterError(f"{sub / WEIGHTS}: not the adapter that {path / CARD} was trained on top of "
                               "(its SHA-256 differs)")
        aset.load(f"_stacked{i}", sub, check_base=check_base)
        aset.merge(f"_stacked{i}")

