"""Detection metrics: AUROC with a bootstrap confidence interval, and recall at a fixed false-positive rate.

Labels are 1 for anomalous (Bob) and 0 for normal (Alice) examples; scores are anomaly scores.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from quirky.errors import QuirkyError
from quirky.scoring import auroc as shared_auroc


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise QuirkyError(f"scores {scores.shape} and labels {labels.shape} must be 1-d and of equal length")
    if labels.all() or not labels.any():
        raise QuirkyError("AUROC needs both normal and anomalous examples; one of the test subsets is empty")
    return scores, labels


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half: `quirky.scoring.auroc`); both classes must be present."""
    return shared_auroc(*_check(scores, labels))


def bootstrap_auroc(
    scores: np.ndarray, labels: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUROC: resample examples with replacement, `n_boot` times.

    Vectorised (one rank computation per resample, ties averaged); resamples that contain a single class are
    skipped (their AUROC is undefined).  Seeded, so the interval is reproducible.
    """
    scores, labels = _check(scores, labels)
    rng = np.random.default_rng(seed)
    n = len(scores)
    aucs: list[np.ndarray] = []
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        s, y = scores[idx], labels[idx]
        ranks = rankdata(s, axis=1)
        n1 = y.sum(axis=1)
        n0 = n - n1
        ok = (n1 > 0) & (n0 > 0)
        u = (ranks * y).sum(axis=1) - n1 * (n1 + 1) / 2.0
        aucs.append(u[ok] / (n1[ok] * n0[ok]))
        done += b
    all_aucs = np.concatenate(aucs)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(all_aucs, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def recall_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """The largest fraction of anomalies flagged by any threshold whose false-positive rate is at most `fpr`.

    The FPR is measured on the normal *test* examples (the ROC-curve definition), not on the trusted data.
    """
    scores, labels = _check(scores, labels)
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(tprs[fprs <= fpr + 1e-12].max())
