"""One AUROC for numpy callers (`quirky.scoring.auroc`): scikit-learn's value, NaN without two classes, and the
stages' own AUROCs are it."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from quirky.scoring import auroc


def test_auroc_is_sklearns_and_nan_without_two_classes() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=200), 1)  # ties
    labels = rng.random(200) < 0.3
    assert auroc(scores, labels) == roc_auc_score(labels, scores)
    assert auroc(scores.astype(np.float32), labels.astype(int)) == roc_auc_score(
        labels, scores.astype(np.float32)
    )
    assert math.isnan(auroc(scores, np.ones(200)))
    assert math.isnan(auroc([], []))


def test_every_stage_uses_it() -> None:
    from quirky.anomaly.metrics import auroc as anomaly_auroc
    from quirky.interventions.experiment import auroc_or_none

    rng = np.random.default_rng(1)
    scores, labels = rng.normal(size=50), np.arange(50) % 2
    assert anomaly_auroc(scores, labels) == auroc(scores, labels)
    assert auroc_or_none(scores, labels) == auroc(scores, labels)
    assert auroc_or_none(scores, np.zeros(50)) is None
