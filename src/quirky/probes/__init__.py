"""The probe zoo (Contract 3): one class per method, all fitted on every layer at once.

    from quirky.probes import make_probe, load_probe
    probe = make_probe("lr").fit(x_train, y_train)       # x: [L, n, d] (pair methods: [L, n, 2, d])
    scores = probe.score(x_test)                          # [L, n] log-odds-like, sign resolved on training data
    probe.save("lr.safetensors"); same = load_probe("lr.safetensors")

Linear probes expose `direction` [L, f] and `bias` [L] with score = x . direction + bias (ccs/crc: applied to
h_pos - h_neg; lr-on-pair/mean-diff-on-pair: f = 2d over [h_neg ; h_pos]).  `random` is a distribution of K
random directions and scores [L, K, n].
"""

from __future__ import annotations

import os
from typing import Any

import torch

from quirky.errors import QuirkyError
from quirky.probes.base import Probe, read_probe_file
from quirky.probes.ccs import CcsProbe
from quirky.probes.crc import CrcProbe
from quirky.probes.lda import LdaProbe
from quirky.probes.lr import LogisticRegressionProbe, PairLogisticRegressionProbe
from quirky.probes.mean_diff import MeanDiffProbe, PairMeanDiffProbe
from quirky.probes.random_baseline import RandomDirectionsProbe

PROBES: dict[str, type[Probe]] = {
    cls.name: cls
    for cls in (
        LogisticRegressionProbe,
        PairLogisticRegressionProbe,
        MeanDiffProbe,
        PairMeanDiffProbe,
        LdaProbe,
        CcsProbe,
        CrcProbe,
        RandomDirectionsProbe,
    )
}
METHODS: tuple[str, ...] = tuple(PROBES)


def probe_class(name: str) -> type[Probe]:
    if name not in PROBES:
        raise QuirkyError(f"unknown probe method {name!r}; choose from {', '.join(METHODS)}")
    return PROBES[name]


def make_probe(name: str, **config: Any) -> Probe:
    """A new, unfitted probe of method `name` with the given hyperparameters."""
    cls = probe_class(name)
    try:
        return cls(**config)
    except TypeError as e:
        raise QuirkyError(f"{name}: bad hyperparameters {config}: {e}") from e


def load_probe(path: str | os.PathLike[str], device: torch.device | str | None = None) -> Probe:
    """Rebuild a saved probe (any method) on `device`; its scores equal the saved probe's."""
    method, config, tensors, _ = read_probe_file(path, device)
    return probe_class(method).from_state(config, tensors)


__all__ = ["METHODS", "PROBES", "Probe", "load_probe", "make_probe", "probe_class"]
