"""Mechanistic anomaly detection: flag Bob's (untruthful) examples using only trusted Alice-easy data."""

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
