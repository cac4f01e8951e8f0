"""Length-grouped batching: batches of similar duration waste less padding and compute.

Training uses :func:`length_grouped_batches` (shuffled mega-batches sorted inside, as the Hugging
Face ``LengthGroupedSampler`` does, so the order stays random but padding stays low); decoding uses
:func:`sorted_batches` (longest first, so the largest batch is met, and fails, first).
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def sorted_batches(durations: Sequence[float], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def length_grouped_batches(durations: Sequence[float], batch_size: int, seed: int,
                           mega_factor: int = 50) -> list[list[int]]:
    """One epoch of batches, deterministic for a seed, so a resumed run sees the same order."""
    rng = random.Random(seed)
    idx = list(range(len(durations)))
    rng.shuffle(idx)
    mega = batch_size * mega_factor
    batches: list[list[int]] = []
    for start in range(0, len(idx), mega):
        chunk = sorted(idx[start:start + mega], key=lambda i: -durations[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
