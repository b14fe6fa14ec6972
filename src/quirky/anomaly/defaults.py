"""The anomaly stage's default detector list, in a module of its own so the CLI can name it without importing
scikit-learn."""

DEFAULT_DETECTORS = ("gaussian", "gaussian-subtract-diag", "mahalanobis", "iforest", "lof")
