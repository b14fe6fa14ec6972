"""The fast probe-stage metrics give the same numbers, bit for bit, as independent per-resample computations.

`bootstrap_auroc_columns` and `auroc_columns` compute every label column and every bootstrap resample from one
sort per row (the count form of the Mann-Whitney statistic).  They must reproduce, exactly, what a per-resample
computation gives: the references here are (1) the exact Mann-Whitney count of each explicitly resampled data
set, from integer pair comparisons, divided once in float64 (bit-equality); (2) scikit-learn's `roc_auc_score`
on the explicitly resampled data (to 1e-12); and (3) the weighted prefix-sum formula the project used before,
one resample and one label column at a time (bit-equality).  The random-direction baseline is checked against a
per-layer, per-column loop of the same kind.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from quirky.experiments.evaluate import EvalSettings, Resamples, evaluate_random, evaluate_scores
from quirky.probes.metrics import (
    accuracy,
    auroc,
    auroc_columns,
    bootstrap_accuracy,
    bootstrap_auroc,
    bootstrap_auroc_columns,
    bootstrap_counts,
    honest_quantile_levels,
    percentile_ci,
    recall_at_fpr,
)
from quirky.probes.random_baseline import RandomDirectionsProbe

pytestmark = pytest.mark.usefixtures("one_blas_thread")


# ---- independent references ------------------------------------------------------------------------------------


def exact_resampled_auroc(s: np.ndarray, y: np.ndarray, c: np.ndarray) -> float:
    """AUROC of scores s with 0/1 labels y where example i occurs c[i] times: the Mann-Whitney count 2U from
    integer pair comparisons (ties count 1/2), then one float64 division (NaN with one class)."""
    pos, neg = y == 1, y == 0
    cp, cn = c[pos].astype(np.int64), c[neg].astype(np.int64)
    n_pos, n_neg = int(cp.sum()), int(cn.sum())
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return math.nan
    sp, sn = s[pos][:, None], s[neg][None, :]
    twice_u = int((cp[:, None] * cn[None, :] * (2 * (sp > sn) + (sp == sn))).sum())
    return (twice_u / 2) / float(n_pos * n_neg)


def prefix_sum_bootstrap(scores: torch.Tensor, y: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The per-resample computation the project used before (one label column): sort each row, gather every
    resample's weights into sorted order and take the weighted AUROC from prefix sums of the negative weight.
    Float64 throughout.  [R, n], [n], [B, n] -> [R, B]."""
    s = torch.nan_to_num(scores, nan=0.0).to(torch.float64)
    nan_rows = torch.isnan(scores).any(dim=-1)
    sorted_s, perm = torch.sort(s, dim=-1, stable=True)
    n = s.shape[-1]
    left = torch.searchsorted(sorted_s, sorted_s, right=False)
    right = torch.searchsorted(sorted_s, sorted_s, right=True)
    y_sorted = y.to(torch.float64)[perm]  # [R, n]
    w = counts.to(torch.float64)[:, perm].permute(1, 0, 2)  # [R, B, n]
    neg = w * (1.0 - y_sorted[:, None, :])
    pos = w * y_sorted[:, None, :]
    cn = torch.nn.functional.pad(torch.cumsum(neg, dim=-1), (1, 0))
    below = torch.gather(cn, -1, left[:, None, :].expand(-1, w.shape[1], n))
    upto = torch.gather(cn, -1, right[:, None, :].expand(-1, w.shape[1], n))
    num = (pos * (below + upto) * 0.5).sum(dim=-1)
    w_pos, w_neg = pos.sum(dim=-1), neg.sum(dim=-1)
    out = num / (w_pos * w_neg)
    bad = (w_pos <= 0) | (w_neg <= 0) | nan_rows[:, None]
    return torch.where(bad, torch.full_like(out, math.nan), out)


def same_bits(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> bool:
    """Equal values, NaN where NaN (no tolerance)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def _data(rows: int, n: int, labels: int, seed: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    y = (rng.random((labels, n)) < 0.45).astype(np.float64)
    s = rng.normal(size=(rows, n)) + y[0]
    if ties:
        s = np.round(s * 2) / 2
    return torch.tensor(s, dtype=torch.float32), torch.tensor(y)


# ---- bootstrap AUROC ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_columns_equal_exact_counts_and_sklearn(ties: bool) -> None:
    s, y = _data(rows=3, n=30, labels=3, seed=1 if ties else 2, ties=ties)
    s[2, 4] = math.nan  # a NaN row is NaN on every resample
    counts = bootstrap_counts(30, 40, seed=5)
    got = bootstrap_auroc_columns(s, y, counts)
    assert got.shape == (3, 3, 40) and got.dtype == torch.float64
    sn, yn, cn = s.double().numpy(), y.numpy().astype(int), counts.numpy().astype(int)
    for r in range(3):
        for k in range(3):
            for b in range(40):
                want = exact_resampled_auroc(sn[r], yn[k], cn[b])
                assert same_bits(got[r, k, b], want), (r, k, b, float(got[r, k, b]), want)
                idx = np.repeat(np.arange(30), cn[b])
                if not math.isnan(want):
                    assert float(got[r, k, b]) == pytest.approx(
                        roc_auc_score(yn[k][idx], sn[r][idx]), abs=1e-12
                    )
    assert torch.isnan(got[2]).all()


@pytest.mark.parametrize(("n", "ties"), [(3000, False), (3000, True)])
def test_bootstrap_columns_exact_in_the_float64_regime(n: int, ties: bool) -> None:
    """Above W (2W + 1) >= 2^24 (here W = 3000) the computation switches to float64; still exact."""
    s, y = _data(rows=2, n=n, labels=2, seed=3, ties=ties)
    counts = bootstrap_counts(n, 3, seed=9)
    got = bootstrap_auroc_columns(s, y, counts)
    sn, yn, cn = s.double().numpy(), y.numpy().astype(int), counts.numpy().astype(int)
    for r in range(2):
        for k in range(2):
            for b in range(3):
                assert same_bits(got[r, k, b], exact_resampled_auroc(sn[r], yn[k], cn[b]))


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_columns_equal_previous_prefix_sum_computation(ties: bool) -> None:
    s, y = _data(rows=6, n=257, labels=3, seed=4, ties=ties)
    counts = bootstrap_counts(257, 300, seed=11)
    got = bootstrap_auroc_columns(s, y, counts, chunk_elems=20_000)  # small chunks: every loop branch runs
    for k in range(3):
        want = prefix_sum_bootstrap(s, y[k], counts)
        assert same_bits(got[:, k], want)
        assert same_bits(bootstrap_auroc(s, y[k], counts), want)
    # per-row labels (the [R, n] form of `bootstrap_auroc`)
    per_row = y[torch.arange(6) % 3]
    want_rows = torch.stack([prefix_sum_bootstrap(s[i : i + 1], per_row[i], counts)[0] for i in range(6)])
    assert same_bits(bootstrap_auroc(s, per_row, counts), want_rows)


def test_bootstrap_columns_real_valued_weights_are_accurate() -> None:
    """Non-integer weights take the float64 path: not bit-exact, but the same weighted AUROC."""
    s, y = _data(rows=3, n=50, labels=2, seed=6, ties=True)
    w = torch.rand(20, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    got = bootstrap_auroc_columns(s, y, w)
    for k in range(2):
        np.testing.assert_allclose(got[:, k].numpy(), prefix_sum_bootstrap(s, y[k], w).numpy(), atol=1e-13)


@pytest.mark.parametrize(
    "chunk_elems", [1 << 20, 3 * 101 + 5]
)  # one block; blocks of 3 rows and a ragged last
def test_auroc_columns_equal_auroc_bit_for_bit(chunk_elems: int) -> None:
    for ties in (False, True):
        s, y = _data(rows=40, n=101, labels=3, seed=7, ties=ties)
        s[5, 0] = math.nan
        got = auroc_columns(s, y, chunk_elems=chunk_elems)
        for k in range(3):
            assert same_bits(got[:, k], auroc(s, y[k]))
            want = [roc_auc_score(y[k].numpy(), row) for row in s.double().numpy() if not np.isnan(row).any()]
            np.testing.assert_allclose(np.delete(got[:, k].numpy(), 5), want, rtol=0, atol=1e-12)
    one_class = auroc_columns(torch.randn(2, 5), torch.ones(1, 5))
    assert torch.isnan(one_class).all()


# ---- evaluate_scores / evaluate_random against per-column loops ---------------------------------------------------


def _meta(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n)
    bob = np.where(rng.random(n) < 0.3, 1 - alice, alice)
    return pd.DataFrame({"label": alice, "alice_label": alice, "bob_label": bob})


def test_evaluate_scores_equal_a_per_column_per_resample_loop() -> None:
    """The result rows, CIs included, equal those of the previous loop (per filter, per label column, the
    prefix-sum bootstrap), with the same resamples."""
    n, layers = 120, 4
    meta = _meta(n, 0)
    meta.loc[meta.index[:5], "bob_label"] = meta["alice_label"].iloc[:5]
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(layers, n, generator=g) + torch.tensor(meta["label"].to_numpy())
    scores[1] = torch.round(scores[1])  # ties in one layer
    settings = EvalSettings(n_boot=200, seed=3)
    got = evaluate_scores(scores, meta, "A", settings, Resamples(settings, torch.device("cpu")))
    resamples = Resamples(settings, torch.device("cpu"))
    i = 0
    for filt, fmask in (
        ("all", np.ones(n, bool)),
        ("agree", (meta["alice_label"] == meta["bob_label"]).to_numpy()),
        ("disagree", (meta["alice_label"] != meta["bob_label"]).to_numpy()),
    ):
        s = scores[:, torch.as_tensor(np.flatnonzero(fmask))]
        counts = resamples.counts("A", filt, int(fmask.sum()))
        for col in settings.label_columns:
            rows = got.iloc[i : i + layers]
            i += layers
            assert (rows["filter"] == filt).all() and (rows["label_col"] == col).all()
            y = torch.tensor(meta[col].to_numpy()[fmask], dtype=torch.float64)
            assert same_bits(rows["auroc"], auroc(s, y))
            assert same_bits(rows["acc"], accuracy(s, y))
            assert same_bits(rows["recall_at_fpr"], recall_at_fpr(s, y, settings.fpr))
            alo, ahi = percentile_ci(bootstrap_accuracy(s, y, counts), settings.ci_level)
            assert same_bits(rows["acc_lo"], alo) and same_bits(rows["acc_hi"], ahi)
            single = int(y.sum()) in (0, len(y))
            lo, hi = percentile_ci(prefix_sum_bootstrap(s, y, counts), settings.ci_level)
            if single:
                assert rows["auroc_lo"].isna().all() and (rows["note"] != "").all()
            else:
                assert same_bits(rows["auroc_lo"], lo) and same_bits(rows["auroc_hi"], hi)
                assert not np.isnan(rows["auroc_lo"].to_numpy()).any()
    assert i == len(got)


def test_evaluate_random_equals_per_column_auroc() -> None:
    n, layers, k = 60, 3, 400
    meta = _meta(n, 2)
    scores = torch.randn(layers, k, n, generator=torch.Generator().manual_seed(2))
    scores[0, :5] = torch.round(scores[0, :5])
    settings = EvalSettings(n_boot=0)
    rows, qrows, dists = evaluate_random(scores, meta, "AE", settings)
    levels = honest_quantile_levels(k, settings.random_min_tail)
    for filt, fmask in (
        ("all", np.ones(n, bool)),
        ("agree", (meta["alice_label"] == meta["bob_label"]).to_numpy()),
        ("disagree", (meta["alice_label"] != meta["bob_label"]).to_numpy()),
    ):
        s = scores[:, :, torch.as_tensor(np.flatnonzero(fmask))]
        for col in settings.label_columns:
            y = torch.tensor(meta[col].to_numpy()[fmask], dtype=torch.float64)
            want = auroc(s, y)  # [L, K], one sort per row and column
            assert same_bits(dists[f"{col}/{filt}"], want.to(torch.float32))
            sel = rows[(rows["filter"] == filt) & (rows["label_col"] == col)]
            assert same_bits(sel["auroc"], want.mean(dim=1))
            qsel = qrows[(qrows["filter"] == filt) & (qrows["label_col"] == col)]
            q = torch.quantile(want, torch.tensor(levels, dtype=torch.float64), dim=1)
            assert same_bits(qsel["auroc"], q.reshape(-1))


def test_random_probe_equals_per_layer_loop() -> None:
    """Signs and scores of the vectorised random baseline equal a per-layer loop over `auroc` (the previous
    computation), for float32 and float64 inputs."""
    g = torch.Generator().manual_seed(4)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(3, 80, 16, generator=g, dtype=dtype)
        y = (torch.rand(80, generator=g) < 0.5).to(dtype)
        x[:, :, 0] += 2 * y
        probe = RandomDirectionsProbe(n_directions=50, seed=3).fit(x, y)
        want_sign = torch.stack(
            [
                torch.where(
                    auroc(probe.directions(layer, 16, x.device, dtype) @ x[layer].mT, y) < 0.5, -1.0, 1.0
                )
                for layer in range(3)
            ]
        ).to(dtype)
        assert torch.equal(probe.sign_, want_sign)
        xt = torch.randn(3, 30, 16, generator=g, dtype=dtype)
        want = torch.stack(
            [
                (probe.directions(layer, 16, x.device, dtype) @ xt[layer].mT) * want_sign[layer, :, None]
                for layer in range(3)
            ]
        )
        assert torch.equal(probe.score(xt), want)


def test_reduced_matmul_precision_keeps_the_counts_exact() -> None:
    """With float32 matrix products allowed to run in reduced precision (TF32 / bfloat16 passes), the integer
    sums switch to float64, so the numbers do not change."""
    s, y = _data(rows=4, n=200, labels=2, seed=8, ties=True)
    counts = bootstrap_counts(200, 50, seed=1)
    want = bootstrap_auroc_columns(s, y, counts)
    want_point = auroc_columns(s, y)
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert same_bits(bootstrap_auroc_columns(s, y, counts), want)
        assert same_bits(auroc_columns(s, y), want_point)
    finally:
        torch.set_float32_matmul_precision(old)
    assert same_bits(want[:, 0], prefix_sum_bootstrap(s, y[0], counts))
