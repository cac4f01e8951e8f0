"""A model's vocabulary projection run through oneDNN with its weight packed once, for decoding on CPU.

Why our own code: PyTorch's CPU ``nn.Linear`` calls MKL's sgemm, which does poorly on the shape a decoding step
gives Whisper's vocabulary projection (16 tokens x 384 -> 51,864 for tiny.en): ~44 GFLOP/s on a 2-core AVX2 AMD
EPYC, 19 ms a step, where the encoder's products reach ~145 and reading the 80 MB weight from memory takes ~3 ms.
oneDNN with the weight packed ahead of time into its own layout did the same product in 9 ms. That is what
torch.compile's CPU backend does when it freezes a model (``torch.ops.mkldnn._reorder_linear_weight`` and
``_linear_pointwise``), and what Intel Extension for PyTorch's ``ipex.optimize`` did for eager models; IPEX is
retired and not built for the torch speechtl uses, and compiling costs more than a test set's decode saves, so
the two ops are called here.

Only the vocabulary projection is packed: it is the one large matrix a step multiplies by a few rows, where MKL
loses most (the decoder's other layers packed too saved nothing more in the measurement), and a packed copy costs
memory (one more copy of that weight, 80 MB for tiny.en). Measured (benchmarks/results/eval_speed_adapted_run5.md):
the offline recipe's encoder model decoded 20 sentences at dynamic context 1.10x as fast (best of 5 rounds; median
of the rounds 1.16x), 0 transcripts changed: the logits differ from MKL's by float32 rounding (~1e-4).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

LOG = logging.getLogger("speechtl.models")


class PackedLinear:
    """The forward of one float32 ``nn.Linear`` through a packed copy of its weight.

    The copy stands in only while it is the weight's: a weight replaced or changed in place since packing (a LoRA
    merge, training), a product that needs gradients, or an input that isn't float32 on CPU falls back to the
    layer's own product, so packing can't make a model compute with stale weights.
    """

    def __init__(self, layer: nn.Linear, rows_hint: int) -> None:
        self.layer = layer
        self.weight = layer.weight
        self.version = layer.weight._version
        self.packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), rows_hint)

    def current(self, x: torch.Tensor) -> bool:
        w = self.layer.weight
        return (w is self.weight and w._version == self.version and x.dtype == torch.float32
                and x.device.type == "cpu" and not (torch.is_grad_enabled() and w.requires_grad))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if not self.current(x):
            return nn.functional.linear(x, layer.weight, layer.bias)
        bias = None if layer.bias is None else layer.bias.detach()
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self.packed, bias, "none", [], "")
        return out.reshape(*x.shape[:-1], out.shape[-1])


def pack_vocabulary_projection(module: nn.Module, rows_hint: int = 16) -> bool:
    """Run ``module``'s output projection (``get_output_embeddings()``) through :class:`PackedLinear`; whether it did.

    Nothing is packed unless the projection is a plain ``nn.Linear`` holding float32 weights on CPU and this
    torch has oneDNN; ``rows_hint``: the rows a product usually has (the decoding batch), which oneDNN tunes the
    layout for. Meant for a model loaded to decode (``speechtl eval``), after any merge or cast.
    """
    get = getattr(module, "get_output_embeddings", None)
    layer = get() if get is not None else None
    if type(layer) is not nn.Linear or layer.weight.dtype != torch.float32 or layer.weight.device.type != "cpu":
        return False
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    try:
        layer.forward = PackedLinear(layer, rows_hint)
    except RuntimeError as e:  # a oneDNN build without this op for this CPU: MKL's product stays
        LOG.debug("vocabulary projection not packed: %s", e)
        return False
    return True
