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


def batch_indices(step: int, global_batch: int, n_examples: int, seed: int) -> np.ndarray:
    """The example indices of optimizer step `step`: positions [step*B, (step+1)*B) of the endless stream."""
    start = step * global_batch
    out: list[np.ndarray] = []
    position = start
    end = start + global_batch
    while position < end:
        epoch, offset = divmod(position, n_examples)
        perm = np.random.default_rng([seed, epoch]).permutation(n_examples)
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
