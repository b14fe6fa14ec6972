"""Mechanistic anomaly detection: flag Bob's (untruthful) examples using only trusted Alice-easy data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quirky._lazy import lazy_exports

_EXPORTS = {
    "quirky.anomaly.detectors": (
        "DETECTOR_FEATURES",
        "GaussianDetector",
        "make_detector",
    ),
    "quirky.anomaly.experiment": (
        "AnomalySplit",
        "evaluate_detector",
    ),
    "quirky.anomaly.metrics": (
        "auroc",
        "bootstrap_auroc",
        "recall_at_fpr",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from quirky.anomaly.detectors import DETECTOR_FEATURES, GaussianDetector, make_detector
    from quirky.anomaly.experiment import AnomalySplit, evaluate_detector
    from quirky.anomaly.metrics import auroc, bootstrap_auroc, recall_at_fpr

__all__ = [
    "DETECTOR_FEATURES",
    "AnomalySplit",
    "GaussianDetector",
    "auroc",
    "bootstrap_auroc",
    "evaluate_detector",
    "make_detector",
    "recall_at_fpr",
]
