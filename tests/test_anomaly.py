"""Anomaly detection: detectors and metrics against analytic answers, scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.metrics import roc_auc_score

from quirky.anomaly.detectors import (
    GaussianDetector,
    IsolationForestDetector,
    LofDetector,
    MahalanobisDetector,
    make_detector,
)
from quirky.anomaly.experiment import AnomalySplit, evaluate_detector, exclusion_reason
from quirky.anomaly.metrics import auroc, bootstrap_auroc, recall_at_fpr
from quirky.errors import QuirkyError


def _cov(rng: np.random.Generator, f: int) -> np.ndarray:
    a = rng.normal(size=(f, f))
    return a @ a.T + 0.5 * np.eye(f)


def test_gaussian_log_density_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    f = 6
    train = rng.multivariate_normal(rng.normal(size=f), _cov(rng, f), size=300)
    x = rng.normal(size=(50, f)) * 2
    det = GaussianDetector().fit(train)
    ref = stats.multivariate_normal(train.mean(axis=0), np.cov(train, rowvar=False, ddof=1)).logpdf(x)
    np.testing.assert_allclose(det.log_density(x), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(det.score(x), -ref, rtol=1e-10, atol=1e-10)
    assert det.jitter_ == 0.0


def test_subtract_diag_matches_hand_computation() -> None:
    rng = np.random.default_rng(1)
    f = 4
    train = rng.multivariate_normal(np.zeros(f), _cov(rng, f), size=200)
    x = rng.normal(size=(30, f))
    mu = train.mean(axis=0)
    cov = np.cov(train, rowvar=False, ddof=1)
    # by hand: full log-density minus the sum of per-feature univariate normal log-densities
    diff = x - mu
    full = -0.5 * (
        f * np.log(2 * np.pi)
        + np.linalg.slogdet(cov)[1]
        + np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    )
    diag = sum(stats.norm(mu[j], np.sqrt(cov[j, j])).logpdf(x[:, j]) for j in range(f))
    det = GaussianDetector(subtract_diag=True).fit(train)
    assert det.name == "gaussian-subtract-diag"
    np.testing.assert_allclose(det.log_density(x), full - diag, rtol=1e-9, atol=1e-9)


def _analytic_chi2_auroc(f: int, lam: float) -> float:
    """P(S_anomalous > S_normal) for S_normal ~ chi2_f and S_anomalous ~ noncentral chi2_f(lam)."""
    value, _ = integrate.quad(lambda s: stats.chi2(f).pdf(s) * stats.ncx2(f, lam).sf(s), 0, np.inf, limit=200)
    return float(value)


def test_gaussian_auroc_near_analytic_value() -> None:
    """Trusted and normal data ~ N(0, I); anomalies shifted by delta. With the fitted Gaussian ≈ the true one,
    the anomaly score is ‖x‖² + const: chi2 vs noncentral chi2, whose AUROC is computed by integration."""
    rng = np.random.default_rng(2)
    f, n = 3, 4000
    delta = np.array([1.2, 0.0, 0.0])
    split = AnomalySplit(
        trusted=rng.normal(size=(20000, f)),
        normal=rng.normal(size=(n, f)),
        anomalous=rng.normal(size=(n, f)) + delta,
    )
    result, scores = evaluate_detector("gaussian", split, n_boot=200, seed=0)
    expected = _analytic_chi2_auroc(f, float(delta @ delta))
    assert 0.6 < expected < 0.8
    assert abs(result["auroc"] - expected) < 0.02
    lo, hi = result["auroc_ci"]
    assert lo < result["auroc"] < hi and hi - lo < 0.05
    # recall at 5% FPR: threshold at the chi2 95% quantile, recall = noncentral chi2 survival
    expected_recall = stats.ncx2(f, float(delta @ delta)).sf(stats.chi2(f).ppf(0.95))
    assert abs(result["recall_at_fpr"]["0.05"] - expected_recall) < 0.04
    assert result["n_trusted"] == 20000 and result["n_normal"] == n and result["n_anomalous"] == n
    assert set(scores) == {"AE", "AH", "BH"} and len(scores["BH"]) == n


def test_metrics_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=300), 1)  # many ties
    labels = rng.random(300) < 0.4
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    # recall at FPR: the best TPR over all thresholds whose FPR is within the budget
    for budget in (0.01, 0.05, 0.2):
        best = 0.0
        for t in np.unique(np.r_[scores, np.inf]):
            flagged = scores >= t
            if flagged[~labels].mean() <= budget:
                best = max(best, flagged[labels].mean())
        assert recall_at_fpr(scores, labels, budget) == pytest.approx(best)


def test_bootstrap_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=60), 1)
    labels = rng.random(60) < 0.3
    n_boot, seed = 300, 7
    draw = np.random.default_rng(seed).integers(0, 60, size=(n_boot, 60))
    aucs = [roc_auc_score(labels[i], scores[i]) for i in draw if 0 < labels[i].sum() < 60]
    expected = np.quantile(aucs, [0.025, 0.975])
    np.testing.assert_allclose(
        bootstrap_auroc(scores, labels, n_boot=n_boot, seed=seed), expected, rtol=1e-12
    )


def test_mahalanobis_uses_ledoit_wolf_shrinkage() -> None:
    rng = np.random.default_rng(5)
    d = 40
    train = rng.normal(size=(30, d))  # fewer examples than dimensions: the sample covariance is singular
    x = rng.normal(size=(10, d))
    det = MahalanobisDetector().fit(train)
    s = float(det.state()["shrinkage"])
    mu = train.mean(axis=0)
    emp = np.cov(train, rowvar=False, ddof=0)
    shrunk = (1 - s) * emp + s * np.trace(emp) / d * np.eye(d)
    diff = x - mu
    expected = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(shrunk), diff)
    np.testing.assert_allclose(det.score(x), expected, rtol=1e-6)
    assert 0 < s < 1


@pytest.mark.parametrize("name", ["iforest", "lof", "mahalanobis", "gaussian"])
def test_every_detector_separates_a_large_shift_and_is_deterministic(name: str) -> None:
    rng = np.random.default_rng(6)
    split = AnomalySplit(
        trusted=rng.normal(size=(400, 4)),
        normal=rng.normal(size=(200, 4)),
        anomalous=rng.normal(size=(200, 4)) + 3,
    )
    a, _ = evaluate_detector(name, split, n_boot=50, seed=0)
    b, _ = evaluate_detector(name, split, n_boot=50, seed=0)
    assert a == b
    assert a["auroc"] > 0.95, a


def test_subtract_diag_sees_broken_correlations_only() -> None:
    """Anomalies with the trusted marginals but the opposite correlation: invisible per feature, visible to the
    full Gaussian and to its diagonal-subtracted variant."""
    rng = np.random.default_rng(8)

    def correlated(n: int, sign: float) -> np.ndarray:
        z = rng.normal(size=n)
        return np.c_[z, sign * z + 0.3 * rng.normal(size=n)]

    split = AnomalySplit(trusted=correlated(2000, 1.0), normal=correlated(500, 1.0), anomalous=correlated(500, -1.0))
    full, _ = evaluate_detector("gaussian", split, n_boot=20)
    sub, _ = evaluate_detector("gaussian-subtract-diag", split, n_boot=20)
    assert full["auroc"] > 0.8 and sub["auroc"] > 0.8
    # a diagonal Gaussian (the per-feature part that subtract_diag removes) sees nothing
    mu, sd = split.trusted.mean(axis=0), split.trusted.std(axis=0, ddof=1)
    diag_score = lambda x: -stats.norm(mu, sd).logpdf(x).sum(axis=1)  # noqa: E731
    labels = np.r_[np.zeros(500), np.ones(500)]
    assert abs(auroc(np.r_[diag_score(split.normal), diag_score(split.anomalous)], labels) - 0.5) < 0.06


def test_singular_covariance_gets_recorded_jitter() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(100, 2))
    train = np.c_[base, base[:, :1]]  # a duplicated column: singular covariance
    det = GaussianDetector().fit(train)
    assert det.jitter_ > 0
    assert np.isfinite(det.score(np.c_[base[:5], base[:5, :1]])).all()


def test_bad_inputs() -> None:
    with pytest.raises(QuirkyError, match="unknown detector"):
        make_detector("svm")
    with pytest.raises(QuirkyError, match="no AH examples"):
        AnomalySplit(trusted=np.zeros((5, 2)), normal=np.zeros((0, 2)), anomalous=np.zeros((3, 2)))
    with pytest.raises(QuirkyError, match="NaN"):
        GaussianDetector().fit(np.full((4, 2), np.nan))
    with pytest.raises(QuirkyError, match="both normal and anomalous"):
        auroc(np.zeros(3), np.zeros(3))
    with pytest.raises(QuirkyError, match="at least 3"):
        LofDetector().fit(np.zeros((2, 2)))
    assert IsolationForestDetector(seed=1).name == "iforest"


def test_exclusions_are_explicit() -> None:
    assert exclusion_reason("addition", ["population"]) is None
    assert "confounded" in (exclusion_reason("population", ["population"]) or "")
    assert exclusion_reason("population", []) is None
    assert "exclusion list" in (exclusion_reason("sciq", ["sciq"]) or "")
