"""Residual bottleneck adapters after each transformer block (Houlsby et al. 2019; Tomanek et al. 2021).

Tomanek et al. ("Residual adapters for parameter-efficient ASR adaptation to atypical and accented
speech", EMNLP 2021) adapt a frozen recogniser to accented speech with one small residual module
after each block: ``h + up(relu(down(norm(h))))``. ``up`` starts at zero, so the adapted model
starts exactly equal to the base and training only ever moves it away as far as the data asks.

The adapter modules live inside the blocks they follow (``<block>.speechtl_adapters.<name>``), so
they move, train and synchronise under DDP with the rest of the model; a forward hook adds the
active one's output. Several named adapters may sit on one block; at most one is active.

Example::

    >>> import torch
    >>> block = torch.nn.Linear(8, 8)  # any module whose output is (or starts with) the hidden states
    >>> add_bottleneck(block, "accent", width=8, size=4)
    >>> set_active(block, "accent")
    >>> x = torch.randn(2, 8)
    >>> bool(torch.equal(block(x), torch.nn.functional.linear(x, block.weight, block.bias)))  # zero-init
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Attribute names on an adapted block.
ADAPTERS, ACTIVE, HOOK = "speechtl_adapters", "speechtl_active_adapter", "_speechtl_adapter_hook"


class Bottleneck(nn.Module):
    """LayerNorm, down-projection to ``size``, ReLU, up-projection (zero-initialised) back to ``width``."""

    def __init__(self, width: int, size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, size)
        self.up = nn.Linear(size, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(self.norm(hidden))))

    @torch.no_grad()
    def scale_(self, factor: float) -> None:
        """Multiply the residual this adapter adds by ``factor``, exactly, for every input.

        ``up`` is linear and comes last, so scaling its weight and bias scales the output; scaling any
        earlier weight would pass through the ReLU and change the function's shape, not its size.
        """
        self.up.weight.mul_(factor)
        self.up.bias.mul_(factor)


def _after_block(block: nn.Module, args: Any, output: Any) -> Any:
    name = getattr(block, ACTIVE, None)
    if name is None:
        return None  # the block's output, unchanged
    adapter = getattr(block, ADAPTERS)[name]
    if isinstance(output, tuple):
        hidden = output[0]
        return (hidden + adapter(hidden).to(hidden.dtype), *output[1:])
    return output + adapter(output).to(output.dtype)


def add_bottleneck(block: nn.Module, name: str, width: int, size: int) -> Bottleneck:
    """Put a new (inactive) adapter ``name`` after ``block``; the hook is registered once per block."""
    if not hasattr(block, ADAPTERS):
        block.add_module(ADAPTERS, nn.ModuleDict())
        setattr(block, ACTIVE, None)
        setattr(block, HOOK, block.register_forward_hook(_after_block))
    adapters = getattr(block, ADAPTERS)
    if name in adapters:
        raise ValueError(f"an adapter named '{name}' is already on this block")
    ref = next(block.parameters(), None)
    adapter = Bottleneck(width, size)
    if ref is not None:
        adapter.to(device=ref.device, dtype=ref.dtype)
    adapters[name] = adapter
    return adapter


def set_active(block: nn.Module, name: str | None) -> None:
    """Make ``name`` the adapter this block adds (None: none); a name the block lacks means none."""
    if hasattr(block, ADAPTERS):
        setattr(block, ACTIVE, name if name in getattr(block, ADAPTERS) else None)
