"""Pure functions of (config, step): the data order, the learning-rate multiplier and the evaluation steps.

Why pure functions: a resumed run must see exactly the batches and learning rates the uninterrupted run would
have seen, so none of them may depend on state accumulated during training (an iterator, a sampler's RNG).
The example order is an endless concatenation of per-epoch permutations, each seeded by (seed, epoch).
"""

from __future__ import annotations

import math

import numpy as np


def total_steps(n_examples: int, global_batch: int, epochs: float, steps: int | None) -> int:
    """`steps` if given, else ceil(epochs * n / global_batch) optimizer steps."""
    if steps is not None:
        return steps
    return max(1, math.ceil(epochs * n_examples / global_batch))


def warmup_steps(total: int, ratio: float) -> int:
    """ceil(ratio * total), as transformers' `get_warmup_steps`."""
    return math.ceil(ratio * total)


def lr_multiplier(step: int, total: int, warmup: int, schedule: str) -> float:
    """The multiplier of the base lr at optimizer step `step` (0-based), as transformers' schedules with warmup:
    linear ramp from 0 over `warmup` steps, then linear decay to 0 / cosine decay to 0 / constant."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, 1.0 - progress)


def epoch_order(n_examples: int, seed: int, epoch: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The example order of one epoch: a permutation seeded by (seed, epoch).

    With `labels` (stratified batches), the two classes are permuted separately and interleaved, so every
    contiguous pair holds one example of each class and every even-sized batch is exactly balanced: the shared
    output bias then gets no per-batch push from a chance majority, which otherwise swings the model between
    answering all-True and all-False early in training.  Leftovers of the larger class go last.
    """
    rng = np.random.default_rng([seed, epoch])
    if labels is None:
        return rng.permutation(n_examples)
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels != 1)
    pos, neg = pos[rng.permutation(len(pos))], neg[rng.permutation(len(neg))]
    k = min(len(pos), len(neg))
    first, second = (pos, neg) if rng.random() < 0.5 else (neg, pos)
    paired = np.empty(2 * k, dtype=np.int64)
    paired[0::2], paired[1::2] = first[:k], second[:k]
    rest = np.concatenate([pos[k:], neg[k:]])
    return np.concatenate([paired, rest[rng.permutation(len(rest))]])


def batch_indices(
    step: int, global_batch: int, n_examples: int, seed: int, labels: np.ndarray | None = None
) -> np.ndarray:
    """The example indices of optimizer step `step`: positions [step*B, (step+1)*B) of the endless stream."""
    start = step * global_batch
    out: list[np.ndarray] = []
    position = start
    end = start + global_batch
    while position < end:
        epoch, offset = divmod(position, n_examples)
        perm = epoch_order(n_examples, seed, epoch, labels)
        take = min(end - position, n_examples - offset)
        out.append(perm[offset : offset + take])
        position += take
    return np.concatenate(out)


def rank_micro_batches(indices: np.ndarray, micro_batch: int, grad_accum: int, rank: int) -> list[np.ndarray]:
    """Split one global batch (world * grad_accum * micro_batch indices) into this rank's micro-batches."""
    per_rank = micro_batch * grad_accum
    mine = indices[rank * per_rank : (rank + 1) * per_rank]
    return [mine[i * micro_batch : (i + 1) * micro_batch] for i in range(grad_accum)]


def eval_steps(total: int, every: int = 0) -> list[int]:
    """Log-spaced evaluation steps 1, 2, 4, 8, ... below `total`, multiples of `every` (if > 0), and `total`."""
    steps = {total}
    k = 1
    while k < total:
        steps.add(k)
        k *= 2
    if every > 0:
        steps.update(range(every, total, every))
    return sorted(steps)
