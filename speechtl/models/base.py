"""The one interface every model family implements; nothing outside ``models/`` sees a family.

``adapt`` trains through :meth:`SpeechModel.loss`, ``evaluate`` decodes through
:meth:`SpeechModel.transcribe`, and freezing names parts through :meth:`SpeechModel.parts`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class ModelLoadError(ValueError):
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

    @abc.abstractmethod
    def collate(self, audios: Sequence[np.ndarray], texts: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Model inputs (and labels when ``texts`` is given) for a batch of 1-D float waveforms."""

    @abc.abstractmethod
    def loss(self, batch: dict[str, torch.Tensor], module: nn.Module | None = None) -> torch.Tensor:
        """Mean training loss of a collated batch.

        ``module`` is the training wrapper of :attr:`module` (DDP, compiled…) to run the forward
        through; the loss itself is always computed the family's way, here.
        """

    @abc.abstractmethod
    def transcribe(self, batch: dict[str, torch.Tensor], **options: Any) -> list[str]:
        """Decoded text for a collated batch (no labels needed)."""

    @abc.abstractmethod
    def parts(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of parameters that a config may freeze (``encoder``, ``decoder``, …)."""

    @abc.abstractmethod
    def enable_gradient_checkpointing(self) -> None:
        """Trade compute for memory in training."""

    @abc.abstractmethod
    def save(self, out_dir: str | os.PathLike) -> None:
        """Write a checkpoint that :func:`speechtl.models.load_model` reads back."""

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
