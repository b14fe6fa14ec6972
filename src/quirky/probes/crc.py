"""Contrastive Representation Clustering (`crc`): the top principal direction of normalised pair differences.

Math (EleutherAI/quirky-language-models: `elk_generalization/elk/crc.py`): LEACE eraser on the stacked pair states
with z = side (the same concept as CCS's, so the same `_contrast.fit_pair_eraser`); w = top principal component of
the centred erased differences e(h_pos) - e(h_neg); then the Platt scale a and bias are fitted on both sides with
the labels (this resolves the sign); output a w . (e(h_pos) - e(h_neg)).

Where it differs: the reference used `torch.pca_lowrank(q=1, niter=10)` (a one-vector randomised estimate, with
the global RNG); here a seeded randomised subspace iteration with oversampling (q = 8) and 10 power iterations,
batched over layers, on the erased differences applied implicitly (P^T maps, nothing materialised but the raw
differences).  `direction` [L, d] applies to h_pos - h_neg; `bias` is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from quirky.probes._contrast import ContrastProbe, PairEraser, fit_pair_eraser


def top_principal_direction(
    diffs: Tensor, eraser: PairEraser, *, oversample: int = 8, niter: int = 10, seed: int = 0
) -> Tensor:
    """Top right singular vector [L, d] of the centred erased differences M = (D - mean D) P^T.

    Randomised subspace iteration: only products M V and M^T U are needed, and both are cheap via
    P^T V = V - right^T (left^T V) and P U' = U' - left (right U').
    """
    num_layers, n, d = diffs.shape
    left, right = eraser.left, eraser.right
    mean = diffs.mean(dim=1, keepdim=True)  # [L, 1, d]
    q = min(oversample, n, d)

    def p_t(v: Tensor) -> Tensor:  # P^T v for v [L, d, q]
        return v - right.mT @ (left.mT @ v)

    def p_(v: Tensor) -> Tensor:  # P v for v [L, d, q]
        return v - left @ (right @ v)

    def mv(v: Tensor) -> Tensor:  # [L, d, q] -> [L, n, q]
        pv = p_t(v)
        return diffs @ pv - mean @ pv

    def mtv(u: Tensor) -> Tensor:  # [L, n, q] -> [L, d, q]
        return p_(diffs.mT @ u - mean.mT @ u.sum(dim=1, keepdim=True))

    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(num_layers, d, q, generator=gen, dtype=torch.float32).to(diffs.device, diffs.dtype)
    qmat = torch.linalg.qr(mv(omega)).Q
    for _ in range(niter):
        z = torch.linalg.qr(mtv(qmat)).Q
        qmat = torch.linalg.qr(mv(z)).Q
    b = mtv(qmat).mT  # [L, q, d] = Q^T M
    _, _, vh = torch.linalg.svd(b, full_matrices=False)
    return vh[:, 0, :]


class CrcProbe(ContrastProbe):
    """`crc`: see the module docstring."""

    name = "crc"

    def __init__(self, oversample: int = 8, niter: int = 10, seed: int = 0) -> None:
        self.oversample, self.niter, self.seed = int(oversample), int(niter), int(seed)

    def _fit(self, x: Tensor, y: Tensor) -> None:
        eraser = fit_pair_eraser(x)
        diffs = x[:, :, 1] - x[:, :, 0]
        w = top_principal_direction(
            diffs, eraser, oversample=self.oversample, niter=self.niter, seed=self.seed
        )
        del diffs
        self._calibrate(x, y, eraser, w, None)
