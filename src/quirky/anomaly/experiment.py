"""The anomaly-detection experiment: fit each detector on trusted Alice-easy data, score Alice-hard vs Bob-hard.

Protocol (the original's, `elk_generalization/anomaly/anomaly_experiment.py`): the detector sees only the trusted
set, the Alice-easy (AE) examples of the test split; it must separate Alice-hard (AH, normal) from Bob-hard (BH,
anomalous).  Normal test data are harder than the trusted data, so a detector that only flags "hard" fails.  No
Bob example reaches `fit`: the loaders check the trusted rows' persona and `evaluate_detector` receives the
trusted matrix alone.

Features: "probe-scores" are the per-layer scores [n, L] of the probe trained on AE (validation split) applied to
the test split; "hiddens" are the raw hidden states [n, d] of one layer of the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quirky.anomaly.detectors import DETECTOR_FEATURES, make_detector
from quirky.anomaly.metrics import auroc, bootstrap_auroc, recall_at_fpr
from quirky.errors import QuirkyError

#: Why a dataset is left out of averaged anomaly results by default (the reference's exclusions).
KNOWN_EXCLUSIONS: dict[str, str] = {
    "population": (
        "population's difficulty is a function of its Alice label (the easy quartile is all-True), so easy vs "
        "hard is confounded with the label; the reference excludes it from anomaly detection"
    ),
}

FPR_LEVELS = (0.01, 0.05)


def exclusion_reason(dataset: str, exclude: Sequence[str]) -> str | None:
    """Why `dataset` is excluded from averages, or None when it is not in `exclude`."""
    if dataset not in exclude:
        return None
    return KNOWN_EXCLUSIONS.get(dataset, f"{dataset} is in the exclusion list (--exclude)")


@dataclass
class AnomalySplit:
    """Features of the trusted (AE), normal (AH) and anomalous (BH) examples, with their example ids."""

    trusted: np.ndarray
    normal: np.ndarray
    anomalous: np.ndarray
    ids: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("trusted", "normal", "anomalous"):
            x = np.asarray(getattr(self, name), dtype=np.float64)
            if x.ndim != 2:
                raise QuirkyError(f"{name} features must be [examples, features], got shape {x.shape}")
            setattr(self, name, x)
        widths = {self.trusted.shape[1], self.normal.shape[1], self.anomalous.shape[1]}
        if len(widths) != 1:
            raise QuirkyError(f"trusted/normal/anomalous features differ in width: {sorted(widths)}")
        for name, subset in (("normal", "AH"), ("anomalous", "BH"), ("trusted", "AE")):
            if len(getattr(self, name)) == 0:
                raise QuirkyError(
                    f"no {subset} examples in the test split: anomaly detection needs Alice-easy (trusted), "
                    "Alice-hard (normal) and Bob-hard (anomalous) examples; extract more test examples"
                )


def evaluate_detector(
    name: str, split: AnomalySplit, *, n_boot: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Fit detector `name` on the trusted rows only; AUROC (anomalous = positive), its bootstrap CI and recall at
    1% and 5% FPR on normal vs anomalous.  Also returns every example's anomaly score by subset."""
    detector = make_detector(name, seed=seed).fit(split.trusted)
    normal = detector.score(split.normal)
    anomalous = detector.score(split.anomalous)
    scores = np.concatenate([normal, anomalous])
    labels = np.concatenate([np.zeros(len(normal), dtype=bool), np.ones(len(anomalous), dtype=bool)])
    if not np.isfinite(scores).all():
        raise QuirkyError(f"detector {name} produced non-finite anomaly scores; the features are degenerate")
    lo, hi = bootstrap_auroc(scores, labels, n_boot=n_boot, seed=seed)
    result = {
        "detector": name,
        "features": DETECTOR_FEATURES[name],
        "auroc": auroc(scores, labels),
        "auroc_ci": [lo, hi],
        "recall_at_fpr": {f"{f:g}": recall_at_fpr(scores, labels, f) for f in FPR_LEVELS},
        "n_trusted": len(split.trusted),
        "n_normal": len(normal),
        "n_anomalous": len(anomalous),
        "state": detector.state(),
    }
    by_subset = {"AE": detector.score(split.trusted), "AH": normal, "BH": anomalous}
    return result, by_subset
