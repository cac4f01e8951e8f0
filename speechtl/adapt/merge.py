"""Weight-space ensembling with the base model (WiSE-FT, Wortsman et al., CVPR 2022).

Fine-tuning on a narrow accent corpus (above all a synthetic one) drags the model towards it and
costs accuracy on everything else. Keeping only a fraction ``alpha`` of the change training made,
``base + alpha * (adapted - base)``, keeps most of the gain and much of the base model's robustness.
On the offline recipe (recipes/synthetic_caribbean/RESULTS.md) the encoder-only and full fine-tuning
runs with alpha 0.5 cut target-accent WER by 77% and 73% relative, while real-speech WER moved +11%
and +13% (neither significant); an earlier encoder-only run on another split had real-speech WER +35%
with the adapted weights alone and about +9% at alpha 0.5. The LoRA and bottleneck runs there used no
WiSE-FT (written before it scaled their updates correctly).

"The change" is the method's own update, so the result is the same kind of model as the adapted one:

- ``full``/``freeze``: every trained weight becomes ``alpha * adapted + (1 - alpha) * base``.
- ``lora``: each layer's ``W0 + s * B @ A`` becomes ``W0 + alpha * s * B @ A``. Blending A and B
  separately would give ``alpha * B @ (alpha * A + (1 - alpha) * A0)``: roughly alpha squared, plus a
  term from A's random initialisation.
- ``adapters``: each block's residual ``r(h)`` becomes ``alpha * r(h)``. Blending the bottleneck's
  weights would pass through its ReLU and change the function, not scale it.
- ``dora``: refused (the config says so before training; see its entry in :mod:`speechtl.adapt.registry`).
  DoRA's layer is ``m * (W0 + s * B @ A) / ||W0 + s * B @ A||`` row by row: its change is not linear in B,
  and no DoRA adapter of the same rank gives ``W0 + alpha * (W' - W0)``.
"""

from __future__ import annotations

import torch
from torch import nn

from speechtl.adapt.adapters import AdapterSet
from speechtl.adapt.config import ConfigError
from speechtl.adapt.methods import TRAINED
from speechtl.adapt.registry import ADAPTER_METHODS, get
from speechtl.models.base import SpeechModel


def trainable_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters that training will change: all the interpolation needs."""
    return {n: p.detach().to("cpu", copy=True) for n, p in module.named_parameters() if p.requires_grad}


def wise_base(model: SpeechModel, method: str) -> dict[str, torch.Tensor]:
    """What :func:`wise` needs kept from before training: the weights that will train (full/freeze).

    An adapter method needs nothing: its base is the zero update it starts from. A method whose update
    can't be scaled (dora) is refused here, before training, for a config made in Python (and so not
    validated as a file is).
    """
    if get(method).no_wise:
        raise ConfigError(f"'wise_alpha' < 1 can't be used with method {method}: {get(method).no_wise}")
    return {} if method in ADAPTER_METHODS else trainable_snapshot(model.module)


def wise(model: SpeechModel, method: str, base: dict[str, torch.Tensor], alpha: float) -> None:
    """In place: keep ``alpha`` of the update training made (see the module docstring), for ``method``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if method in ADAPTER_METHODS:
        AdapterSet.of(model).scale(TRAINED, alpha)
    else:
        _interpolate(model.module, base, alpha)


@torch.no_grad()
def _interpolate(module: nn.Module, base: dict[str, torch.Tensor], alpha: float) -> None:
    """Each parameter named in ``base`` becomes ``alpha * current + (1 - alpha) * base``."""
    params = dict(module.named_parameters())
    missing = [n for n in base if n not in params]
    if missing:
        raise KeyError(f"base snapshot names parameters the model lacks: {missing[:5]}")
    for name, ref in base.items():
        p = params[name]
        p.mul_(alpha).add_(ref.to(p.device, p.dtype), alpha=1.0 - alpha)
