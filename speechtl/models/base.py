"""The one interface every model family implements; nothing outside ``models/`` sees a family.

``adapt`` trains through :meth:`SpeechModel.loss`, ``evaluate`` decodes through
:meth:`SpeechModel.transcribe`, and freezing names parts through :meth:`SpeechModel.parts`.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from speechtl.errors import SpeechtlError

LOG = logging.getLogger("speechtl.models")


def probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def count(minimum: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        return value

    return check


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


#: SpecAugment settings, named as transformers' configs name them (Whisper and wav2vec2 alike).
SPEC_AUGMENT: dict[str, Callable[[str, Any], Any]] = {
    "apply_spec_augment": flag,
    "mask_time_prob": probability, "mask_time_length": count(1), "mask_time_min_masks": count(0),
    "mask_feature_prob": probability, "mask_feature_length": count(1), "mask_feature_min_masks": count(0),
}


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's weights: every state-dict entry's name, dtype, shape and bytes, in name order.

    Hashing tensors rather than files makes the hash independent of how the weights were stored
    (one file or shards, safetensors or a CTranslate2 conversion), so an adapter can check that it
    is being put on the very base it was trained on.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class AdapterControl(Protocol):
    """What :mod:`speechtl.adapt.adapters` attaches as :attr:`SpeechModel.adapters` (models can't import adapt)."""

    active: str | None

    def names(self) -> list[str]: ...
    def activate(self, name: str) -> None: ...
    def disable(self) -> None: ...
    def merge(self, name: str | None = None) -> None: ...


class ModelLoadError(SpeechtlError):
    """A model source that can't be loaded; the message says what was tried and how to fix it."""


class SpeechModel(abc.ABC):
    family: str = ""
    #: The transformers module; trained, moved and saved as a whole.
    module: nn.Module
    sampling_rate: int = 16000
    #: Longest input the model accepts, in seconds (None: unbounded).
    max_input_seconds: float | None = None
    #: Where the weights came from (hub id, directory); recorded in experiment dirs and reports.
    source: str = ""
    #: What to pass to :func:`speechtl.models.load_model` to load these base weights again (hub id or
    #: absolute path); set by the loader, written into adapter cards.
    name_or_path: str = ""
    #: Module names that LoRA adapts by default (PEFT ``target_modules``, matched as name suffixes).
    lora_targets: tuple[str, ...] = ()
    #: Named adapters, when :mod:`speechtl.adapt` has attached some (see :meth:`set_adapter`).
    adapters: AdapterControl | None = None
    #: The confidence gate an adapter's card carries (:class:`speechtl.models.gate.Gate`): decoding through
    #: :func:`speechtl.models.gate.route` keeps the base model's transcript where the base is sure of it.
    gate: Any = None
    #: The values the settings an adapter changed (its ``model_settings``) had on the base model, None where
    #: the base had none: the gate decodes with these when the adapters are off.
    base_settings: dict[str, Any] = {}

    @abc.abstractmethod
    def collate(self, audios: Sequence[np.ndarray], texts: Sequence[str] | None = None,
                langs: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Model inputs (and labels when ``texts`` is given) for a batch of 1-D float waveforms.

        ``langs``: each utterance's language (the manifest's ``lang``), for a model that is told the
        language (multilingual Whisper); a model with one vocabulary for all ignores it.
        """

    @abc.abstractmethod
    def logits(self, batch: dict[str, torch.Tensor],
               module: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Output logits ``(batch, positions, vocabulary)`` of a collated batch with labels, and a boolean
        mask ``(batch, positions)`` of the positions training learns from (Whisper: the label tokens;
        CTC: each utterance's real frames, not padding).

        One forward serves both the loss and anything else that compares outputs (distillation to the
        base model), so those never run the model twice or need to know the family. ``module`` is the
        training wrapper of :attr:`module` (DDP, compiled…), or another module of the same
        architecture (a frozen teacher), to run the forward through.
        """

    @abc.abstractmethod
    def loss_from_logits(self, batch: dict[str, torch.Tensor], logits: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
        """The family's mean training loss from :meth:`logits`' output."""

    def loss(self, batch: dict[str, torch.Tensor], module: nn.Module | None = None) -> torch.Tensor:
        """Mean training loss of a collated batch.

        ``module`` is the training wrapper of :attr:`module` (DDP, compiled…) to run the forward
        through; the loss itself is always computed the family's way, in :meth:`loss_from_logits`.
        """
        return self.loss_from_logits(batch, *self.logits(batch, module))

    def loss_items(self, batch: dict[str, torch.Tensor]) -> int:
        """How many items :meth:`loss` averages over in ``batch`` (here utterances; token-level losses
        override), so that several processes can weigh their losses into the global batch's mean."""
        return len(next(iter(batch.values())))

    @abc.abstractmethod
    def transcribe(self, batch: dict[str, torch.Tensor], **options: Any) -> list[str]:
        """Decoded text for a collated batch (no labels needed)."""

    @abc.abstractmethod
    def transcribe_scored(self, batch: dict[str, torch.Tensor], **options: Any) -> list[tuple[str, float]]:
        """:meth:`transcribe`'s texts, each with the model's confidence in it: the mean log-probability per
        output unit (Whisper: token, teacher-forced on its own transcript; CTC: frame, of the greedy path).
        Comparable between utterances of one model, not between models; the confidence gate thresholds it."""

    def target_text(self, text: str) -> str:
        """``text`` as this model writes it, to train on (``target_style: model``); here unchanged.

        Training on the corpus's own form when it differs from the pretrained model's (capitals, no
        punctuation) teaches the model that form and costs it on every other kind of speech; each
        family that has a house style overrides this. Scoring never sees it (it normalises both sides).
        """
        return text

    @abc.abstractmethod
    def fit_vocabulary(self, texts: Sequence[str]) -> str:
        """Make the output vocabulary able to spell ``texts`` before training on them.

        Returns ``"kept"`` when the pretrained one already can, ``"rebuilt"`` when a new vocabulary
        (and output layer) had to be made; the caller records which, since a rebuilt head starts
        from scratch.
        """

    @abc.abstractmethod
    def parts(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of parameters that a config may freeze (``encoder``, ``decoder``, …)."""

    @abc.abstractmethod
    def blocks(self) -> dict[str, list[nn.Module]]:
        """The transformer blocks of each stack (``encoder``, ``decoder``), in order: where bottleneck
        adapters go. Each block's output (or first output) is its hidden states, ``hidden_size`` wide."""

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width of the hidden states between transformer blocks."""

    def enable_gradient_checkpointing(self) -> None:
        """Trade compute for memory in training: recompute each block's activations in the backward pass.

        Non-reentrant, so frozen inputs (LoRA, adapters) still get gradients. transformers 5.25 renamed the
        switch ``activation_checkpointing_enable`` (the old name warns and goes in v6); older releases only
        have ``gradient_checkpointing_enable``."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.module, "activation_checkpointing_enable"):
            self.module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    @abc.abstractmethod
    def save(self, out_dir: str | os.PathLike) -> None:
        """Write a checkpoint that :func:`speechtl.models.load_model` reads back."""

    #: Model config settings :meth:`configure` may change, with their validators.
    settings: dict[str, Callable[[str, Any], Any]] = SPEC_AUGMENT

    def configure(self, **settings: Any) -> None:
        """Change training-time settings on the model config (SpecAugment…); all are checked first.

        Only settings read at each forward are listed, so a loaded model changes without a rebuild,
        and they are saved with it.
        """
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            raise ValueError(f"unknown {self.family} model setting(s) {unknown}; known: {', '.join(self.settings)}")
        checked = {name: self.settings[name](name, value) for name, value in settings.items()}  # all or none
        for name, value in checked.items():
            setattr(self.module.config, name, value)
        if checked:
            LOG.info("%s: %s", self.source, ", ".join(f"{k}={v}" for k, v in checked.items()))

    def gate_limits(self, audios: Sequence[np.ndarray]) -> dict[str, int]:
        """Upper bounds on decoding options for the confidence gate's base pass over ``audios`` (a family that can
        run on past what is worth reading bounds it here; a transcript cut by a bound scores −inf); none here."""
        return {}

    @contextlib.contextmanager
    def settings_as(self, values: Mapping[str, Any]) -> Iterator[None]:
        """Run with these :attr:`settings` on the config (None: absent, the model's default), then restore them.

        Unchecked on purpose: ``values`` are ones the config held before (:attr:`base_settings`).
        """
        config, missing = self.module.config, object()
        saved = {k: getattr(config, k, missing) for k in values}

        def put(k: str, v: Any) -> None:
            if v is None or v is missing:
                if k in config.__dict__:
                    delattr(config, k)
            else:
                setattr(config, k, v)

        for k, v in values.items():
            put(k, v)
        try:
            yield
        finally:
            for k, v in saved.items():
                put(k, v)

    # -- named adapters (NeMo's adapter mixin; PEFT's multi-adapter models) ----------------------------
    def _adapters(self) -> AdapterControl:
        if self.adapters is None:
            raise ValueError(f"{self.source}: no adapters are attached; load some with "
                             "speechtl.load_model(base, adapters={'name': ADAPTER_DIR})")
        return self.adapters

    def set_adapter(self, name: str) -> None:
        """Make adapter ``name`` the one in use (the others stay loaded, off); cheap, per request."""
        self._adapters().activate(name)

    def disable_adapters(self) -> None:
        """Run the base model alone until :meth:`set_adapter` is called again."""
        self._adapters().disable()

    def merge(self, name: str | None = None) -> None:
        """Fold adapter ``name`` (default: the active one) into the weights for serving; the others are dropped."""
        self._adapters().merge(name)

    @property
    def active_adapter(self) -> str | None:
        return self.adapters.active if self.adapters is not None else None

    def to(self, device: torch.device | str) -> SpeechModel:
        self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad or not trainable_only)

    def describe(self) -> dict[str, Any]:
        return {"family": self.family, "source": self.source, "parameters": self.num_parameters(),
                "trainable_parameters": self.num_parameters(trainable_only=True)}


def is_checkpoint_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))
