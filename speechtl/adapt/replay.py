"""Forgetting control by replay: every training batch carries a few utterances of general speech.

Rehearsal of old data is the oldest remedy for catastrophic forgetting (Robins 1995; in ASR
adaptation, e.g. Vander Eeckt & Van hamme 2023): the model keeps being asked to get the speech
it already knew right while it learns the new accent. Here a fixed share of each batch,
``round(replay_fraction * batch_size)`` utterances, comes from ``replay_manifest``; the rest are
training utterances, batched as without replay.

Which replay utterances a batch gets is a pure function of (seed, epoch, batch index), like the
rest of the data order, so a resumed run replays exactly what it would have; and global batches are
drawn first and then shared out by rank, so N processes together replay what one process would with
the same global batch. Replay audio is never augmented: it stands for the speech the base model
already handles, as that speech sounds (see :class:`speechtl.adapt.trainer.Batches`).
"""

from __future__ import annotations

import numpy as np


def replay_batches(num_replay: int, per_batch: int, world: int, rank: int, seed: int, epoch: int,
                   batches: int) -> list[list[int]]:
    """This process's replay utterances (indices into the replay manifest) for each of ``batches`` global batches.

    Global batch ``b`` of an epoch takes the next ``per_batch * world`` items of a stream of shuffled
    passes over the manifest (pass ``k`` shuffled by ``(seed, epoch, k)``), so every replay utterance
    comes round once before any comes round twice; process ``rank`` takes its ``per_batch`` of them.
    """
    if num_replay < 1 or per_batch < 1:
        return [[] for _ in range(batches)]
    size = per_batch * world
    stream: list[int] = []
    passes = 0
    while len(stream) < batches * size:
        stream += np.random.default_rng([seed % 2**32, epoch, passes]).permutation(num_replay).tolist()
        passes += 1
    start = rank * per_batch
    return [stream[b * size + start: b * size + start + per_batch] for b in range(batches)]
