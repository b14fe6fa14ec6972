"""Metrics for probe scores, batched over layers: AUROC (ties averaged), bootstrap CIs, accuracy, recall@FPR.

Why hand-written instead of scikit-learn: the transfer grid scores ~10^3 (method, train, test, label, filter)
combinations, each over every layer, each with a 1000-resample bootstrap.  Looping `roc_auc_score` over that is
minutes; here one sort per layer serves the point estimate, every bootstrap resample *and* every label column,
because a resample is just a vector of example multiplicities (weights), a weighted AUROC needs only prefix sums
in sorted order, and the label columns enter through one matrix product (`bootstrap_auroc_columns`).
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
    perm, left, right, nan_rows, _ = _ranked(scores)
    return perm, left, right, nan_rows


def _ranked(scores: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """`_sorted_stats` plus `tied` [...]: whether a row has any tie.  Without ties (the usual case for float
    scores) `left`/`right` are views of one arange, so the tie bookkeeping costs nothing."""
    nan_rows = torch.isnan(scores).any(dim=-1)
    s = torch.nan_to_num(scores, nan=0.0)
    sorted_s, perm = torch.sort(s, dim=-1, stable=True)
    n = s.shape[-1]
    idx = torch.arange(n, device=s.device).expand(s.shape)
    if n == 0:
        return perm, idx, idx, nan_rows, torch.zeros_like(nan_rows)
    differs = sorted_s[..., 1:] != sorted_s[..., :-1]
    tied = ~differs.all(dim=-1)
    if not bool(tied.any()):
        return perm, idx, torch.arange(1, n + 1, device=s.device).expand(s.shape), nan_rows, tied
    # shaped from `s`, not sliced from `differs`: with one element `differs` is empty and so would be its slice
    true_col = torch.ones((*s.shape[:-1], 1), dtype=torch.bool, device=s.device)
    starts = torch.where(torch.cat([true_col, differs], dim=-1), idx, torch.zeros_like(idx))
    left = torch.cummax(starts, dim=-1).values
    ends = torch.where(torch.cat([differs, true_col], dim=-1), idx + 1, torch.full_like(idx, n))
    right = torch.flip(torch.cummin(torch.flip(ends, [-1]), dim=-1).values, [-1])
    return perm, left, right, nan_rows, tied


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


def _label_rows(labels: Tensor, n: int, device: torch.device) -> Tensor:
    """0/1 label columns as float64 [K, n] (a single vector [n] becomes one column)."""
    y = torch.as_tensor(labels, device=device).to(torch.float64)
    if y.ndim == 1:
        y = y.unsqueeze(0)
    if y.ndim != 2 or y.shape[-1] != n:
        raise ValueError(f"labels must be [n] or [columns, n] with n = {n}, got shape {tuple(y.shape)}")
    return y


def _exact_dtype(bound: float, device: torch.device) -> torch.dtype:
    """float32 when every integer the computation can produce is at most `bound` < 2^24 (so float32 holds all
    of them, and all partial sums of nonnegative terms, exactly); float64 otherwise.  Also float64 whenever
    float32 matrix products may run in reduced precision (TF32 or bfloat16 passes, allowed by
    `torch.set_float32_matmul_precision` other than "highest", or by CUDA's TF32 switch): they would round the
    integers."""
    reduced = torch.get_float32_matmul_precision() != "highest" or (
        device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    )
    return torch.float32 if bound < 2.0**24 and not reduced else torch.float64


def auroc_columns(scores: Tensor, labels: Tensor, *, chunk_elems: int = 1 << 20) -> Tensor:
    """AUROC of every row of `scores` [R, n] against every 0/1 label column `labels` [K, n]: float64 [R, K].

    Why: the random baseline scores 10^3 directions x layers against 3 label columns; `auroc` would sort every
    row once per column.  Here one sort per row serves all columns, through the Mann-Whitney form
    AUROC = (sum of the positives' midranks - P (P + 1) / 2) / (P N).  Twice a midrank is the integer
    left + right + 1 of the row's tie group [left, right), so the positives' sums for all K columns are one
    matrix product of the doubled midranks (in the original order) with the labels, exact in float32 while
    n (2n + 1) < 2^24, in float64 beyond.  The numerator U and the denominator P N are thus the same exact numbers
    that `auroc` divides, and the results are bit-identical to `auroc(scores, labels[k])` (tests check this).
    """
    if scores.ndim != 2:
        raise ValueError("auroc_columns expects scores of shape [rows, n]")
    rows, n = scores.shape
    y = _label_rows(labels, n, scores.device)
    dt = _exact_dtype(n * (2.0 * n + 1), scores.device)
    # rows are independent: blocks of about `chunk_elems` scores bound the sort's int64 temporaries (the random
    # baseline ranks 10^4-10^5 rows at once) without changing a bit of the result
    step = max(1, chunk_elems // max(1, n))
    s2 = torch.empty(rows, y.shape[0], dtype=torch.float64, device=scores.device)
    nan_rows = torch.empty(rows, dtype=torch.bool, device=scores.device)
    y_t = y.to(dt).T
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        perm, left, right, nan_rows[r0:r1], _ = _ranked(scores[r0:r1])
        twice_midrank = torch.empty(r1 - r0, n, dtype=dt, device=scores.device)
        twice_midrank.scatter_(1, perm, (left + right + 1).to(dt))
        s2[r0:r1] = twice_midrank @ y_t  # [rows, K]
    n_pos = y.sum(dim=1)
    n_neg = n - n_pos
    u = (s2 - n_pos * (n_pos + 1)) * 0.5
    out = u / (n_pos * n_neg)
    undefined = (n_pos <= 0) | (n_neg <= 0) | nan_rows[:, None]
    return torch.where(undefined, torch.full_like(out, math.nan), out)


def _doubled_rank_sums(
    y_sorted: Tensor,
    counts_t: Tensor,
    perm: Tensor,
    left: Tensor,
    right: Tensor,
    tied: Tensor,
    self_pairs: Tensor,
    chunk_elems: int,
) -> Tensor:
    """S = sum_i y_i c_i (cc[left_i] + cc[right_i] + 1) of `bootstrap_auroc_columns`, float64 [R, K, B], in
    chunks of rows x resamples of about `chunk_elems` elements (the gathered multiplicities are the peak memory).
    Rows without ties take the shortcut 2 sum_i y_i c_i cc_i - self_pairs."""
    rows, _, n = y_sorted.shape
    n_boot = counts_t.shape[1]
    dev = y_sorted.device
    s2 = torch.empty(rows, y_sorted.shape[1], n_boot, dtype=torch.float64, device=dev)
    b_step = max(1, min(n_boot, chunk_elems // n))
    r_step = max(1, chunk_elems // (n * b_step))
    for b0 in range(0, n_boot, b_step):
        b1 = min(n_boot, b0 + b_step)
        ct = counts_t if b1 - b0 == n_boot else counts_t[:, b0:b1].contiguous()
        for r0 in range(0, rows, r_step):
            r1 = min(rows, r0 + r_step)
            r = r1 - r0
            c = ct.index_select(0, perm[r0:r1].reshape(-1)).view(r, n, b1 - b0)
            if not bool(tied[r0:r1].any()):
                cc = torch.cumsum(c, dim=1).mul_(c)
                t = torch.bmm(y_sorted[r0:r1], cc).to(torch.float64)
                s2[r0:r1, :, b0:b1] = 2.0 * t - self_pairs[None, :, b0:b1]
            else:
                cc = torch.nn.functional.pad(torch.cumsum(c, dim=1), (0, 0, 1, 0)).reshape(r * (n + 1), -1)
                base = (torch.arange(r, device=dev) * (n + 1))[:, None]
                a2 = cc.index_select(0, (left[r0:r1] + base).reshape(-1))
                a2 += cc.index_select(0, (right[r0:r1] + base).reshape(-1))
                a2 = a2.view(r, n, b1 - b0).add_(1.0).mul_(c)
                s2[r0:r1, :, b0:b1] = torch.bmm(y_sorted[r0:r1], a2).to(torch.float64)
    return s2


def bootstrap_auroc_columns(
    scores: Tensor,
    labels: Tensor,
    counts: Tensor,
    *,
    chunk_elems: int = 1 << 19,
) -> Tensor:
    """AUROC of every row of `scores` [R, n], against every 0/1 label column `labels` [K, n], on every resample
    `counts` [B, n] (multiplicities): float64 [R, K, B].  Resamples with one class give NaN.

    Why: this is the bootstrap of the whole transfer grid (every method, experiment, test subset, filter and
    layer, 1000 resamples each), so its cost is the stage's cost.  One sort per row serves every resample and
    every label column.  With c the resample's multiplicities in sorted order and cc their inclusive prefix
    sums, the doubled weighted midrank of a copy of element i is cc[left_i] + cc[right_i] + 1 (cc padded with a
    leading 0), and 2U = S - P (P + 1) with S = sum_i y_i c_i (cc[left_i] + cc[right_i] + 1) (the count form
    of the Mann-Whitney statistic; a P x P block of positive-positive pairs cancels exactly).  Without ties
    cc[left] + cc[right] = 2 cc_i - c_i, so S = 2 sum_i y_i c_i cc_i - sum_i y_i c_i (c_i - 1): per resample
    one gather of the multiplicities into sorted order (whole rows of the transposed counts), one prefix sum,
    one product, and one batched matrix product with the K label columns; the second term, P and N need no
    sorting (matrix products in the original order).  For integer multiplicities with total W, every number
    involved is an integer of at most W (2W + 1), exact in float32 below 2^24 (W <= 2895) and in float64
    beyond; so U and P N are exact, and the result is bit-identical to dividing the exact Mann-Whitney count
    by P N, which is what the per-resample computation did (the tests check both).
    """
    if scores.ndim != 2:
        raise ValueError("bootstrap_auroc_columns expects scores of shape [rows, n]")
    rows, n = scores.shape
    dev = scores.device
    y = _label_rows(labels, n, dev)
    k = y.shape[0]
    c64 = counts.to(device=dev, dtype=torch.float64)
    if c64.ndim != 2 or c64.shape[1] != n:
        raise ValueError(f"counts must be [resamples, {n}], got shape {tuple(counts.shape)}")
    n_boot = c64.shape[0]
    out = torch.full((rows, k, n_boot), math.nan, dtype=torch.float64, device=dev)
    if rows == 0 or n == 0 or n_boot == 0:
        return out
    perm, left, right, nan_rows, tied = _ranked(scores)
    n_pos = y @ c64.T  # [K, B]
    n_neg = c64.sum(dim=1) - n_pos
    self_pairs = y @ (c64 * (c64 - 1)).T  # [K, B]: sum_i y_i c_i (c_i - 1)
    total = float(c64.sum(dim=1).max())
    integral = bool(torch.equal(c64, torch.round(c64)))
    dt = _exact_dtype(total * (2.0 * total + 1), dev) if integral else torch.float64
    counts_t = c64.T.to(dt).contiguous()  # [n, B]: a gather into sorted order copies whole rows
    y_sorted = y.to(dt)[:, perm].permute(1, 0, 2).contiguous()  # [R, K, n]
    s2 = _doubled_rank_sums(y_sorted, counts_t, perm, left, right, tied, self_pairs, chunk_elems)
    u = (s2 - (n_pos * (n_pos + 1))[None]) * 0.5
    res = u / (n_pos * n_neg)[None]
    undefined = ((n_pos <= 0) | (n_neg <= 0))[None] | nan_rows[:, None, None]
    return torch.where(undefined, out, res)


def bootstrap_auroc(
    scores: Tensor,
    labels: Tensor,
    counts: Tensor,
    *,
    chunk_elems: int = 1 << 19,
) -> Tensor:
    """AUROC of every row of `scores` [R, n] on every resample `counts` [B, n]: float64 [R, B].

    `labels` [n] (shared by all rows) or [R, n] (one label vector per row).  One sort per row; each resample is
    a weighting of the sorted row (see `bootstrap_auroc_columns`).  Resamples with one class give NaN.
    """
    if scores.ndim != 2:
        raise ValueError("bootstrap_auroc expects scores of shape [rows, n]")
    y = torch.as_tensor(labels, device=scores.device)
    if y.ndim == 1 or y.shape[0] == 1:
        return bootstrap_auroc_columns(scores, y.reshape(1, -1), counts, chunk_elems=chunk_elems)[:, 0]
    if y.shape != scores.shape:
        raise ValueError(f"labels must be [n] or [rows, n] = {tuple(scores.shape)}, got {tuple(y.shape)}")
    return torch.stack(
        [
            bootstrap_auroc_columns(scores[i : i + 1], y[i : i + 1], counts, chunk_elems=chunk_elems)[0, 0]
            for i in range(scores.shape[0])
        ]
    )


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
