"""Anomaly detectors: fit on trusted (normal) examples only, then score new examples.

Why several: the reference method (a Gaussian on the per-layer scores of the Alice-easy probe) is one choice
among many; a user should be able to check whether its AUROC comes from the features or from the density model.
Every detector's `score` returns an *anomaly score* (higher = more anomalous), so every AUROC in this package
is computed with the anomalous class (Bob) as the positive label.  The reference computed AUROC of the
log-density with the normal class as positive, which is the same number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from quirky.errors import QuirkyError


class Detector(Protocol):
    """Fit on trusted data `x: [n, f]`; `score(x) -> [n]` anomaly scores (higher = more anomalous)."""

    name: str

    def fit(self, x: np.ndarray) -> Detector: ...

    def score(self, x: np.ndarray) -> np.ndarray: ...

    def state(self) -> dict[str, float | int | str]: ...


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise QuirkyError(f"{what} must be a 2-d array [examples, features], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise QuirkyError(f"{what} contains NaN or infinite values; check the probe scores / hidden states")
    return x


def _check_fit_data(x: np.ndarray, minimum: int) -> np.ndarray:
    x = _as_2d(x, "trusted features")
    if x.shape[0] < minimum:
        raise QuirkyError(
            f"only {x.shape[0]} trusted examples to fit the detector (need at least {minimum}); "
            "extract more Alice-easy test examples"
        )
    return x


def _cholesky_with_jitter(cov: np.ndarray, rcond: float = 1e-9) -> tuple[np.ndarray, float]:
    """Cholesky factor of `cov`, after adding a diagonal jitter when it is (numerically) singular.

    Why: with few trusted examples or collinear layer scores the sample covariance is singular or nearly so; the
    reference (torch MultivariateNormal) then crashes or returns log-densities dominated by rounding error.  When
    the smallest eigenvalue is below `rcond` times the largest, `rcond * largest` is added to the diagonal; the
    jitter used is returned so results record it (0.0 for a well-conditioned covariance).
    """
    eig = np.linalg.eigvalsh(cov)
    top = float(eig.max()) if eig.size and eig.max() > 0 else 1.0
    jitter = 0.0 if eig.min() > rcond * top else rcond * top - min(float(eig.min()), 0.0)
    try:
        return np.linalg.cholesky(cov + jitter * np.eye(len(cov))), jitter
    except np.linalg.LinAlgError as e:
        raise QuirkyError(
            "the covariance of the trusted features is degenerate even after regularisation"
        ) from e


def _gaussian_logpdf(x: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """log N(x; mean, L Lᵀ) for every row of x, via a triangular solve (no explicit inverse)."""
    from scipy.linalg import solve_triangular

    z = solve_triangular(chol, (x - mean).T, lower=True)  # [f, n]
    maha = np.sum(z * z, axis=0)
    logdet = 2.0 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (x.shape[1] * np.log(2.0 * np.pi) + logdet + maha)


@dataclass
class GaussianDetector:
    """The reference method: a multivariate normal fitted to the trusted features; anomaly score = −log-density.

    `subtract_diag=True` scores log N(x; μ, Σ) − log N(x; μ, diag Σ) instead (the reference's `--subtract-diag`):
    it keeps only what the correlations between features add, discounting examples that are merely extreme in each
    feature separately.  The covariance is unbiased (ddof=1), as `torch.cov` in the reference.
    """

    subtract_diag: bool = False
    name: str = "gaussian"
    mean_: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    cov_: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    jitter_: float = 0.0

    def __post_init__(self) -> None:
        if self.subtract_diag:
            self.name = "gaussian-subtract-diag"

    def fit(self, x: np.ndarray) -> GaussianDetector:
        x = _check_fit_data(x, 2)
        self.mean_ = x.mean(axis=0)
        self.cov_ = np.atleast_2d(np.cov(x, rowvar=False, ddof=1))
        self._chol, self.jitter_ = _cholesky_with_jitter(self.cov_)
        var = np.diag(self.cov_) + self.jitter_
        if np.any(var <= 0):
            var = np.where(var > 0, var, max(float(var.max()), 1.0) * 1e-12)
        self._diag_chol = np.diag(np.sqrt(var))
        return self

    def log_density(self, x: np.ndarray) -> np.ndarray:
        x = _as_2d(x, "features")
        if x.shape[1] != self.mean_.shape[0]:
            raise QuirkyError(f"detector fitted on {self.mean_.shape[0]} features, got {x.shape[1]}")
        logp = _gaussian_logpdf(x, self.mean_, self._chol)
        if self.subtract_diag:
            logp = logp - _gaussian_logpdf(x, self.mean_, self._diag_chol)
        return logp

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.log_density(x)

    def state(self) -> dict[str, float | int | str]:
        return {"features": int(self.mean_.shape[0]), "jitter": self.jitter_}


@dataclass
class MahalanobisDetector:
    """Squared Mahalanobis distance to the trusted mean with a Ledoit-Wolf shrinkage covariance.

    Why shrinkage: used on raw hidden states (d in the hundreds or thousands, often more than the trusted
    examples), where the sample covariance is singular.  Ledoit-Wolf picks the shrinkage analytically.
    """

    name: str = "mahalanobis"

    def fit(self, x: np.ndarray) -> MahalanobisDetector:
        x = _check_fit_data(x, 2)
        self._lw = LedoitWolf().fit(x)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return self._lw.mahalanobis(_as_2d(x, "features"))

    def state(self) -> dict[str, float | int | str]:
        return {"features": int(self._lw.location_.shape[0]), "shrinkage": float(self._lw.shrinkage_)}


@dataclass
class IsolationForestDetector:
    """scikit-learn's IsolationForest; anomaly score = −score_samples.  Seeded, so results are reproducible."""

    seed: int = 0
    n_estimators: int = 200
    name: str = "iforest"

    def fit(self, x: np.ndarray) -> IsolationForestDetector:
        x = _check_fit_data(x, 2)
        self._model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(x)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self._model.score_samples(_as_2d(x, "features"))

    def state(self) -> dict[str, float | int | str]:
        return {"n_estimators": self.n_estimators, "seed": self.seed}


@dataclass
class LofDetector:
    """scikit-learn's LocalOutlierFactor in novelty mode (fit on trusted data, score new data); score = −score_samples."""

    n_neighbors: int = 20
    name: str = "lof"

    def fit(self, x: np.ndarray) -> LofDetector:
        x = _check_fit_data(x, 3)
        self._k = min(self.n_neighbors, x.shape[0] - 1)
        self._model = LocalOutlierFactor(n_neighbors=self._k, novelty=True).fit(x)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self._model.score_samples(_as_2d(x, "features"))

    def state(self) -> dict[str, float | int | str]:
        return {"n_neighbors": self._k}


#: detector name -> the features it is applied to ("probe-scores": per-layer scores of the AE-trained probe;
#: "hiddens": the raw hidden states of one layer).
DETECTOR_FEATURES: dict[str, str] = {
    "gaussian": "probe-scores",
    "gaussian-subtract-diag": "probe-scores",
    "iforest": "probe-scores",
    "lof": "probe-scores",
    "mahalanobis": "hiddens",
}


def make_detector(name: str, seed: int = 0) -> Detector:
    """Build a detector by name (see `DETECTOR_FEATURES` for the names and what each is applied to)."""
    if name == "gaussian":
        return GaussianDetector()
    if name == "gaussian-subtract-diag":
        return GaussianDetector(subtract_diag=True)
    if name == "mahalanobis":
        return MahalanobisDetector()
    if name == "iforest":
        return IsolationForestDetector(seed=seed)
    if name == "lof":
        return LofDetector()
    raise QuirkyError(f"unknown detector {name!r}; choose from {', '.join(DETECTOR_FEATURES)}")
