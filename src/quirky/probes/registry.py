"""The method registry: name -> probe class, and the two ways to get a probe (new or loaded from disk)."""

from __future__ import annotations

import os
from typing import Any

import torch

from quirky.errors import QuirkyError
from quirky.probes import METHODS
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


if tuple(PROBES) != METHODS:  # the light list in `quirky.probes` must name exactly these classes, in order
    raise ImportError(f"quirky.probes.METHODS {METHODS} != registered probes {tuple(PROBES)}")
