"""Probe metrics against independent references (scikit-learn, explicit resampling, hand computations)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from quirky.probes.metrics import (
    accuracy,
    auroc,
    bootstrap_accuracy,
    bootstrap_auroc,
    bootstrap_counts,
    honest_quantile_levels,
    percentile_ci,
    recall_at_fpr,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS thread: these tiny problems are dominated by thread start-up on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_auroc_with_ties_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        s = rng.integers(0, 4, size=(3, n)).astype(np.float64)  # heavy ties
        got = auroc(torch.tensor(s), torch.tensor(y)).numpy()
        want = [roc_auc_score(y, row) for row in s]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_auroc_batched_labels_and_undefined_cases():
    s = torch.tensor([[0.1, 0.4, 0.35, 0.8], [1.0, 1.0, 1.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    out = auroc(s, y)
    assert out[0] == pytest.approx(0.75)
    assert out[1] == pytest.approx(0.5)  # all tied
    assert math.isnan(auroc(s, torch.tensor([1, 1, 1, 1]))[0])  # single class
    s_nan = s.clone()
    s_nan[0, 1] = math.nan
    res = auroc(s_nan, y)
    assert math.isnan(res[0]) and res[1] == pytest.approx(0.5)
    # labels broadcast per row
    y2 = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]])
    assert auroc(s[:1].expand(2, 4), y2).tolist() == pytest.approx([0.75, 0.25])


def test_bootstrap_auroc_equals_explicit_resampling():
    rng = np.random.default_rng(1)
    n = 40
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(size=(2, n)) + y, 1)  # ties
    counts = bootstrap_counts(n, 25, seed=3)
    got = bootstrap_auroc(torch.tensor(s), torch.tensor(y), counts).numpy()
    for b in range(25):
        idx = np.repeat(np.arange(n), counts[b].numpy().astype(int))
        for r in range(2):
            if y[idx].min() == y[idx].max():
                assert math.isnan(got[r, b])
            else:
                assert got[r, b] == pytest.approx(roc_auc_score(y[idx], s[r, idx]), abs=1e-12)
    acc = bootstrap_accuracy(torch.tensor(s), torch.tensor(y), counts).numpy()
    for b in range(5):
        idx = np.repeat(np.arange(n), counts[b].numpy().astype(int))
        assert acc[0, b] == pytest.approx(np.mean((s[0, idx] > 0) == y[idx]))


def test_bootstrap_counts_deterministic_and_ci_sane():
    a, b = bootstrap_counts(50, 10, seed=7), bootstrap_counts(50, 10, seed=7)
    assert torch.equal(a, b) and torch.all(a.sum(1) == 50)
    rng = np.random.default_rng(2)
    cis = []
    for n in (100, 1600):
        y = rng.integers(0, 2, n)
        s = torch.tensor(rng.normal(size=(1, n)) + 1.0 * y)
        point = float(auroc(s, torch.tensor(y))[0])
        lo, hi = percentile_ci(bootstrap_auroc(s, torch.tensor(y), bootstrap_counts(n, 400, seed=0)))
        assert lo[0] < point < hi[0]
        width = float(hi[0] - lo[0])
        cis.append(width)
        # Hanley & McNeil (1982) standard error: the 95% interval should be about 2 * 1.96 * SE wide
        n1, n0 = int(y.sum()), int(n - y.sum())
        q1, q2 = point / (2 - point), 2 * point**2 / (1 + point)
        se = math.sqrt(
            (point * (1 - point) + (n1 - 1) * (q1 - point**2) + (n0 - 1) * (q2 - point**2)) / (n0 * n1)
        )
        assert width == pytest.approx(2 * 1.96 * se, rel=0.25)
    # width shrinks ~ 1/sqrt(n): 16x the data, about a quarter of the width
    assert 0.15 < cis[1] / cis[0] < 0.4


def test_accuracy_and_recall_at_fpr_by_hand():
    s = torch.tensor([[-2.0, -1.0, 0.5, 3.0, 1.0, -0.5, 2.0, 0.0]])
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # predictions s > 0: [0,0,1,1,1,0,1,0] -> correct [1,1,0,0,1,0,1,0]
    assert accuracy(s, y)[0] == pytest.approx(4 / 8)
    # negatives sorted desc: 3.0, 0.5, -1, -2.  fpr 0.25 -> k=1 -> threshold 0.5: positives > 0.5 -> 1.0, 2.0
    assert recall_at_fpr(s, y, 0.25)[0] == pytest.approx(2 / 4)
    # fpr 0 -> threshold 3.0: no positive above it
    assert recall_at_fpr(s, y, 0.0)[0] == pytest.approx(0.0)
    assert recall_at_fpr(s, y, 0.5)[0] == pytest.approx(1.0)  # threshold -1.0: every positive is above
    assert math.isnan(recall_at_fpr(s, torch.zeros(8), 0.1)[0])


def test_honest_quantile_levels():
    levels = honest_quantile_levels(1000)
    assert 0.5 in levels and min(levels) == 2.0**-6 and max(levels) == 1 - 2.0**-6
    assert min(honest_quantile_levels(10 * 2**16)) == 2.0**-16
    assert honest_quantile_levels(10) == []
