"""The AUROC of numpy scores, one definition for every stage that scores outside the probe grid (finetuning's
evaluation, anomaly detection, interventions, the report).  The probe grid's batched torch AUROCs
(`quirky.probes.metrics`) agree with it (tests/test_metrics.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of `scores` against binary `labels` (ties count one half: scikit-learn's
    `roc_auc_score`); NaN when the labels hold fewer than two classes (or none at all)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if labels.size == 0 or np.unique(labels).size < 2:
        return math.nan
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))
