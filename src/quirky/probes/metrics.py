"""Metrics for probe scores, batched over layers: AUROC (ties averaged), bootstrap CIs, accuracy, recall@FPR.

Why hand-written instead of scikit-learn: the transfer grid scores ~10^3 (method, train, test, label, filter)
combinations, each over every layer, each with a 1000-resample bootstrap.  Looping `roc_auc_score` over that is
minutes; here one sort per layer serves the point estimate *and* every bootstrap resample, because a resample is
just a vector of example multiplicities (weights) and a weighted AUROC needs only prefix sums in sorted order.
The results equal scikit-learn's `roc_auc_score` (ties count 1/2, i.e. the Mann-Whitney U statistic); the tests
check that, and that a weighted AUROC equals the AUROC of the explicitly resampled data.

All inputs are torch tensors; results are float64 tensors on the scores' device.  NaN marks "undefined": a row
with a NaN score, or a label vector holding a single class.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Random-direction quantile levels of the reference (2^-16 ... 2^-2, 0.5, 1-2^-2 ... 1-2^-16); a level is only
# reported when enough draws lie beyond it (see `honest_quantile_levels`).
REFERENCE_QUANTILE_LEVELS: tuple[float, ...] = (
    *tuple(2.0 ** (-k) for k in range(16, 1, -1)),
    0.5,
    *tuple(1 - 2.0 ** (-k) for k in range(2, 17)),
)


def _sorted_stats(scores: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sort each row; return (perm, left, right, nan_rows).

    `left[i]`/`right[i]`: the number of elements of the row strictly below / at most the i-th sorted element,
    i.e. the tie group of element i occupies sorted positions [left, right).  Found in O(n) from the group
    boundaries of the sorted row (running max of group starts, running min of group ends).
    """
    nan_rows = torch.isnan(scores).any(dim=-1)
    s = torch.nan_to_num(scores, nan=0.0)
    sorted_s, perm = torch.sort(s, dim=-1, stable=True)
    n = s.shape[-1]
    idx = torch.arange(n, device=s.device).expand(s.shape)
    if n == 0:
        return perm, idx, idx, nan_rows
    differs = sorted_s[..., 1:] != sorted_s[..., :-1]
    # shaped from `s`, not sliced from `differs`: with one element `differs` is empty and so would be its slice
    true_col = torch.ones((*s.shape[:-1], 1), dtype=torch.bool, device=s.device)
    starts = torch.where(torch.cat([true_col, differs], dim=-1), idx, torch.zeros_like(idx))
    left = torch.cummax(starts, dim=-1).values
    ends = torch.where(torch.cat([differs, true_col], dim=-1), idx + 1, torch.full_like(idx, n))
    right = torch.flip(torch.cummin(torch.flip(ends, [-1]), dim=-1).values, [-1])
    return perm, left, right, nan_rows


def _weighted_auroc_sorted(
    y_sorted: Tensor, w_sorted: Tensor, left: Tensor, right: Tensor, nan_rows: Tensor
) -> Tensor:
    """AUROC from sorted labels `y_sorted` and weights `w_sorted` [..., n] with the tie structure of the row.

    AUROC = sum_i w_i y_i (N(< s_i) + N(= s_i)/2) / (W_pos W_neg), N(.) the negative weight in that range.
    """
    neg = w_sorted * (1.0 - y_sorted)
    pos = w_sorted * y_sorted
    # exclusive prefix sums of negative weight, length n+1: cn[k] = negative weight of sorted positions < k
    cn = torch.nn.functional.pad(torch.cumsum(neg, dim=-1), (1, 0))
    left = left.expand_as(w_sorted)
    right = right.expand_as(w_sorted)
    below = torch.gather(cn, -1, left)
    upto = torch.gather(cn, -1, right)
    num = (pos * (below + upto) * 0.5).sum(dim=-1)
    w_pos = pos.sum(dim=-1)
    w_neg = neg.sum(dim=-1)
    denom = w_pos * w_neg
    out = num / denom
    undefined = (w_pos <= 0) | (w_neg <= 0) | nan_rows
    return torch.where(undefined, torch.full_like(out, math.nan), out)


def _as_labels(labels: Tensor, like: Tensor) -> Tensor:
    y = torch.as_tensor(labels, device=like.device)
    if y.dtype == torch.bool:
        y = y.to(torch.float64)
    y = y.to(torch.float64)
    if y.shape[-1] != like.shape[-1]:
        raise ValueError(f"labels have {y.shape[-1]} examples but scores have {like.shape[-1]}")
    return y


def auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """AUROC of each row of `scores` [..., n] against 0/1 `labels` (broadcast to [..., n]); ties count 1/2.

    Returns float64 [...]; NaN where a row has a NaN score or the labels hold one class only.
    """
    perm, left, right, nan_rows = _sorted_stats(scores)
    y = _as_labels(labels, scores).expand(scores.shape)
    y_sorted = torch.gather(y, -1, perm)
    return _weighted_auroc_sorted(y_sorted, torch.ones_like(y_sorted), left, right, nan_rows)


def bootstrap_counts(n: int, n_boot: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """Multiplicities [n_boot, n] of `n_boot` resamples with replacement (seeded, device-independent)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_boot, n), generator=gen)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))
    return counts.to(device)


def bootstrap_auroc(
    scores: Tensor,
    labels: Tensor,
    counts: Tensor,
    *,
    chunk_elems: int = 8_000_000,
) -> Tensor:
    """AUROC of every row of `scores` [R, n] on every resample `counts` [B, n]: float64 [R, B].

    One sort per row; each resample is a weighting of the sorted row.  Resamples with one class give NaN.
    """
    if scores.ndim != 2:
        raise ValueError("bootstrap_auroc expects scores of shape [rows, n]")
    perm, left, right, nan_rows = _sorted_stats(scores)
    y = _as_labels(labels, scores).expand(scores.shape)
    y_sorted = torch.gather(y, -1, perm)  # [R, n]
    rows, n = scores.shape
    n_boot = counts.shape[0]
    out = torch.empty(rows, n_boot, dtype=torch.float64, device=scores.device)
    step = max(1, chunk_elems // max(1, n * n_boot))
    counts = counts.to(device=scores.device, dtype=torch.float64)
    for a in range(0, rows, step):
        b = min(rows, a + step)
        w_sorted = counts[:, perm[a:b]].permute(1, 0, 2)  # [r, B, n]
        out[a:b] = _weighted_auroc_sorted(
            y_sorted[a:b, None, :],
            w_sorted,
            left[a:b, None, :],
            right[a:b, None, :],
            nan_rows[a:b, None],
        )
    return out


def percentile_ci(samples: Tensor, level: float = 0.95) -> tuple[Tensor, Tensor]:
    """Percentile interval over the last dim, ignoring NaN resamples; NaN if more than half are NaN."""
    alpha = (1.0 - level) / 2.0
    q = torch.tensor([alpha, 1.0 - alpha], dtype=samples.dtype, device=samples.device)
    lo_hi = torch.nanquantile(samples, q, dim=-1)
    too_few = torch.isnan(samples).float().mean(dim=-1) > 0.5
    lo_hi = torch.where(too_few, torch.full_like(lo_hi, math.nan), lo_hi)
    return lo_hi[0], lo_hi[1]


def accuracy(scores: Tensor, labels: Tensor, threshold: float = 0.0) -> Tensor:
    """Fraction of rows' predictions `score > threshold` equal to the label: float64 [...]; NaN on NaN scores."""
    y = _as_labels(labels, scores).expand(scores.shape)
    correct = ((scores.to(torch.float64) > threshold).to(torch.float64) == y).to(torch.float64)
    acc = correct.mean(dim=-1)
    return torch.where(torch.isnan(scores).any(dim=-1), torch.full_like(acc, math.nan), acc)


def bootstrap_accuracy(scores: Tensor, labels: Tensor, counts: Tensor, threshold: float = 0.0) -> Tensor:
    """Accuracy of every row [R, n] on every resample `counts` [B, n]: float64 [R, B]."""
    y = _as_labels(labels, scores).expand(scores.shape)
    correct = ((scores.to(torch.float64) > threshold).to(torch.float64) == y).to(torch.float64)
    counts = counts.to(device=scores.device, dtype=torch.float64)
    out = correct @ counts.T / counts.sum(dim=-1)
    nan_rows = torch.isnan(scores).any(dim=-1)
    return torch.where(nan_rows[:, None], torch.full_like(out, math.nan), out)


def recall_at_fpr(scores: Tensor, labels: Tensor, fpr: float = 0.05) -> Tensor:
    """Recall (true-positive rate) at the strictest threshold whose false-positive rate is <= `fpr`.

    The threshold is the k-th largest negative score with k = floor(fpr * n_neg); a positive counts as detected
    only if it scores strictly above it, so ties never push the FPR over the target.  float64 [...].
    """
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    s = scores.to(torch.float64)
    y = _as_labels(labels, scores).expand(s.shape).bool()
    n_neg = (~y).sum(dim=-1)
    n_pos = y.sum(dim=-1)
    neg_sorted = torch.sort(torch.where(y, torch.full_like(s, -math.inf), s), dim=-1, descending=True).values
    k = torch.clamp(torch.floor(fpr * n_neg.to(torch.float64)).to(torch.long), max=s.shape[-1] - 1)
    thr = torch.gather(neg_sorted, -1, k.unsqueeze(-1))
    hits = ((s > thr) & y).sum(dim=-1).to(torch.float64)
    out = hits / n_pos.to(torch.float64)
    undefined = (n_pos == 0) | (n_neg == 0) | torch.isnan(s).any(dim=-1)
    return torch.where(undefined, torch.full_like(out, math.nan), out)


def honest_quantile_levels(n_draws: int, min_tail: int = 10) -> list[float]:
    """The reference's quantile levels that `n_draws` samples can actually estimate.

    A level p is kept only if at least `min_tail` draws lie beyond it on its side (n_draws * min(p, 1-p) >=
    min_tail): the reference reported 2^-16 quantiles from 1000 draws, which are just the sample min/max.
    """
    return [p for p in REFERENCE_QUANTILE_LEVELS if n_draws * min(p, 1.0 - p) >= min_tail]
