"""Independent pieces of CPU inference run side by side, one core each, instead of one after another on all cores.

Why our own code: PyTorch has one intra-op thread count for the process and no per-call setting, and its own
inter-op pool (``torch.jit.fork``) gives every task the full intra-op count, so two tasks would fight over the
same cores. Whisper's encoder on a few hundred frames splits its products into pieces too small for several cores
to share well. On a 2-core AVX2 EPYC, encoding 20 read sentences at dynamic context (~490 encoder frames each) took
1.43 s one utterance at a time on both cores and 1.28 s two at a time on each core alone, side by side (best of 11
interleaved rounds; medians 1.71 s and 1.46 s; CPU seconds 2.84 and 2.50); at the full 30 s context the two ways
were even. Decoding those sentences end to end gained less (1.04x best, 1.02x median of 9 rounds: the encoder is
about half of it; more cores take more pieces at once, not measured here). The outputs were bit for bit the same:
each piece is computed as it would be alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def across_cores(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, the items spread over the intra-op threads, each computing on one.

    Only for inference on CPU: with gradients enabled, on one thread, for one item or under a parallel backend other
    than OpenMP (whose thread count is per thread; the native backend's pool is shared and fixed once used) it is
    the plain loop. The calling thread's grad and inference modes are the workers' (both are per thread in
    PyTorch), and its thread count is back as it was on return, also after an error.
    """
    threads = torch.get_num_threads()
    if threads < 2 or len(items) < 2 or torch.is_grad_enabled() or not openmp():
        return [fn(x) for x in items]
    inference = torch.is_inference_mode_enabled()

    def run(x: T) -> R:
        with torch.inference_mode(inference), torch.no_grad():
            return fn(x)

    # the workers read the process's count when they first run an op: one each, set before they start
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(threads, len(items))) as pool:
            return list(pool.map(run, items))
    finally:
        torch.set_num_threads(threads)


@functools.cache
def openmp() -> bool:
    """Whether this torch parallelises its operators with OpenMP (the PyPI wheels for Linux among them)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()
