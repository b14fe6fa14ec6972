"""Layer selection by the Earliest Informative Layer (EIL), as the original defines it
(`earliest_informative_layer` in `elk_generalization/results/viz.py`).

On the source distribution (the probe's training subset, scored on the test split, all examples, against the
training label column), EIL is the first layer whose AUROC - 0.5 reaches 95% of the best layer's AUROC - 0.5;
if no layer beats chance (max AUROC < 0.5), the middle layer L // 2.  Transfer AUROCs are read at that layer.
NaN layers (undefined AUROC) are ignored; if every layer is NaN the middle layer is returned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def earliest_informative_layer(aurocs: Sequence[float] | np.ndarray, fraction: float = 0.95) -> int:
    """Index of the earliest informative layer for per-layer AUROCs [L]."""
    a = np.asarray(aurocs, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("earliest_informative_layer expects a non-empty 1-d array of per-layer AUROCs")
    finite = np.isfinite(a)
    if not finite.any():
        return a.size // 2
    best = float(np.max(a[finite]))
    if best < 0.5:
        return a.size // 2
    threshold = fraction * (best - 0.5)
    for i, v in enumerate(a):
        if math.isfinite(v) and v - 0.5 >= threshold:
            return i
    return a.size // 2  # unreachable: the best layer always qualifies
