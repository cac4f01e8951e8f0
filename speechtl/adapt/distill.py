"""Forgetting control by distillation to the base model ("learning without forgetting").

Adapting to one accent pulls a recogniser's output distributions away from the base model's, and
with them its accuracy on every other kind of speech. Learning without forgetting (Li & Hoiem,
ECCV 2016) keeps the adapted model's outputs close to the base model's on the training batches
themselves, with knowledge distillation's softened targets (Hinton et al., 2015)::

    objective = task loss + w * T^2 * KL(softmax(base / T) || softmax(adapted / T))

averaged over the positions the task loss learns from (:meth:`SpeechModel.logits`' mask: Whisper's
teacher-forced label tokens, CTC's real frames), so this file never asks which family it holds.

Choices, and why:

* **Additive** (LwF's ``L_new + lambda * L_old``), not Hinton's ``(1 - w) * CE + w * KD``: the task
  loss keeps its scale whatever ``w`` is, so a learning rate tuned without distillation still fits
  and ``w = 0`` is exactly the plain run; ``w`` is a pull towards the base, and may exceed 1.
* **T^2**: softening by ``T`` shrinks the distillation gradients by ``1/T^2`` (Hinton et al., sec. 2),
  so multiplying by ``T^2`` keeps a given ``w`` about as strong at any temperature.
* **The teacher** is the base model. For ``lora`` and ``adapters`` it is the very module being
  trained with its adapters switched off (:func:`adapters_off`): the base weights under the adapters
  are frozen, so no copy is needed. For ``full`` and ``freeze`` it is a frozen deep copy of the base
  module taken before training (:func:`frozen_copy`): one more set of weights in memory, recorded
  as ``distill_teacher_bytes``. (A ``freeze`` run could share its frozen parts with the copy; not
  done, for one simple path.)
* **The teacher runs in eval mode**, under ``no_grad``: its targets are the base model's real
  predictions, free of dropout, LayerDrop and SpecAugment (which the student keeps as regularisers),
  the same for both kinds of teacher; and a teacher forward then draws no random numbers, so the
  student's dropout and masks are those of the run without distillation.
* **The teacher's audio context** (``distill_teacher_context: full``, Whisper): the teacher reads the batch padded
  to 30 s, as the base model was trained, while the student trains at its dynamic context, so the pull is towards
  what the base writes at 30 s. That is FUTO's audio-context fine-tuning (github futo-org/whisper-acft: a student at
  a context cut to the clip, a teacher at 30 s) as a term of LwF, for models meant to decode at a short context;
  the teacher's forward then costs a 30 s encoder pass a batch.
* **DDP**: the term is a mean over this process's positions; the trainer weighs it by this process's
  share of the global batch's positions (as it weighs the task loss by its share of items), so N
  processes give the gradient one process would with the same global batch.

Example (a fabricated batch: a student equal to its teacher gives exactly zero)::

    >>> import torch
    >>> logits, mask = torch.randn(2, 5, 7), torch.ones(2, 5, dtype=torch.bool)
    >>> float(distillation(logits, logits.clone(), mask, temperature=2.0))
    0.0
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from speechtl.adapt.config import ConfigError, TrainConfig
from speechtl.adapt.registry import ADAPTER_METHODS
from speechtl.models.base import SpeechModel

LOG = logging.getLogger("speechtl.adapt")


def distillation(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)``, a mean over the positions in ``mask``, in fp32 (softmaxes over a
    whole vocabulary lose the small probabilities the KL sums in half precision)."""
    with torch.autocast(device_type=student.device.type, enabled=False):
        s = nn.functional.log_softmax(student[mask].float() / temperature, dim=-1)
        t = nn.functional.log_softmax(teacher[mask].float() / temperature, dim=-1)
        kl = nn.functional.kl_div(s, t, log_target=True, reduction="sum") / max(1, s.shape[0])
    return temperature ** 2 * kl


@contextlib.contextmanager
def adapters_off(model: SpeechModel) -> Iterator[None]:
    """``model`` as its base alone, in eval mode, for a teacher forward; all put back afterwards.

    PEFT flips ``requires_grad`` as it switches LoRA layers (off when disabling, and speechtl
    activates adapters in inference mode), so the trainable flags are saved and restored: the
    optimiser's parameters must still train after the teacher has run.
    """
    trainable = [p for p in model.module.parameters() if p.requires_grad]
    active, training = model.active_adapter, model.module.training
    model.disable_adapters()
    model.module.eval()
    try:
        yield
    finally:
        model.module.train(training)
        if active is not None:
            model.set_adapter(active)
        for p in trainable:
            p.requires_grad_(True)


def frozen_copy(module: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of ``module`` that never trains: no gradients, eval mode, on ``device``."""
    teacher = copy.deepcopy(module).to(device)
    teacher.requires_grad_(False)
    return teacher.eval()


def parameter_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


@dataclass
class Terms:
    """One batch's share of the objective, before DDP weighting (see :meth:`Objective.__call__`)."""

    loss: torch.Tensor  #: the family's task loss, a mean over ``items``
    distill: torch.Tensor | None  #: ``T^2 * KL``, a mean over ``positions``; None when not distilling
    items: int  #: what the task loss averages over (tokens, utterances): :meth:`SpeechModel.loss_items`
    positions: int  #: what the distillation term averages over

    def counts(self) -> list[int]:
        return [self.items] if self.distill is None else [self.items, self.positions]

    def total(self, weight: float, shares: list[float]) -> torch.Tensor:
        """``loss * share + weight * distill * share``, each mean weighted by this process's share of its items."""
        total = self.loss * shares[0]
        if self.distill is not None:
            total = total + weight * self.distill * shares[1]
        return total


class Objective:
    """What training minimises on a batch: the family's loss, plus ``distill_weight`` times the distillation term."""

    def __init__(self, model: SpeechModel, cfg: TrainConfig, teacher: nn.Module | None = None) -> None:
        self.model, self.teacher = model, teacher
        self.weight, self.temperature = cfg.distill_weight, cfg.distill_temperature
        #: ``full``: the teacher reads each batch at the model's full audio context (Whisper's 30 s).
        self.teacher_context = cfg.distill_teacher_context
        self.distills = cfg.distill_weight > 0
        #: Bytes of the teacher's weights held beside the model (0: none, or the model itself, adapters off).
        self.teacher_bytes = parameter_bytes(teacher) if teacher is not None else 0

    @classmethod
    def build(cls, model: SpeechModel, cfg: TrainConfig, vocabulary: str, device: torch.device) -> Objective:
        """The objective for ``cfg``; with distillation, its teacher (call after the method is applied)."""
        if not cfg.distill_weight > 0:
            return cls(model, cfg)
        if vocabulary == "rebuilt":
            raise ConfigError("distill_weight: the target texts needed a new CTC vocabulary and a fresh output head, "
                              "so the base model has no distribution over the new vocabulary to distil; use a base "
                              "whose vocabulary covers the text, or distill_weight 0")
        if cfg.distill_teacher_context == "full" and not hasattr(model, "at_full_context"):
            raise ConfigError(f"distill_teacher_context: full is Whisper's (its 30 s audio context); a {model.family} "
                              "model has no audio context to widen")
        teacher = None if cfg.method in ADAPTER_METHODS else frozen_copy(model.module, device)
        objective = cls(model, cfg, teacher)
        LOG.info("distillation to the base model: weight %g, temperature %g; teacher: %s", cfg.distill_weight,
                 cfg.distill_temperature, f"a frozen copy ({objective.teacher_bytes / 2**20:.1f} MiB of weights)"
                 if teacher is not None else "the model itself with its adapters off (no copy)")
        return objective

    @torch.no_grad()
    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.teacher_context == "full":
            batch = self.model.at_full_context(batch)
        if self.teacher is not None:
            return self.model.logits(batch, self.teacher)[0]
        with adapters_off(self.model):
            return self.model.logits(batch)[0]

    def __call__(self, batch: dict[str, torch.Tensor], module: nn.Module | None = None) -> Terms:
        """The terms of ``batch``, the student's forward through ``module`` (the training wrapper)."""
        items = self.model.loss_items(batch)
        if not self.distills:
            return Terms(self.model.loss(batch, module), None, items, 0)
        # The teacher first: switching adapters off and on again must not happen inside the student's graph.
        target = self.teacher_logits(batch)
        logits, mask = self.model.logits(batch, module)
        return Terms(self.model.loss_from_logits(batch, logits, mask),
                     distillation(logits, target, mask, self.temperature), items, int(mask.sum()))
