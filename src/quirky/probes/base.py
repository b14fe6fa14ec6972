"""The probe interface (Contract 3), input validation and safetensors serialisation.

Every probe is fitted on all layers at once: `fit(x, y)` with x [L, n, f] (pair methods: [L, n, 2, d]) and
labels y [n]; `score(x)` returns [L, n] log-odds-like scores whose sign was resolved on the training data.  The
whole fitted state (weights, bias, scale, normaliser) is a flat dict of tensors, so `save` writes one
safetensors file whose metadata names the method and its hyperparameters, and `load_probe` rebuilds an
identical probe (identical scores) on any device.

Why validation lives here: a probe is where bad data first meets linear algebra; a NaN, a single-class label
vector or a wrong shape must become a `QuirkyError` that names the problem, not a LAPACK error three calls deep.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from quirky.errors import QuirkyError
from quirky.fileio import atomic_path

PROBE_FORMAT = "quirky-probe"
PROBE_FORMAT_VERSION = "1"


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 inputs stay float64 (tests against references); everything else is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_features(x: Tensor, *, pair: bool, name: str, what: str = "features") -> None:
    """Shape and finiteness checks for probe inputs (a QuirkyError that says what is wrong)."""
    if not isinstance(x, Tensor):
        raise QuirkyError(f"{name}: {what} must be a torch.Tensor, got {type(x).__name__}")
    if pair:
        if x.ndim != 4 or x.shape[2] != 2:
            raise QuirkyError(
                f"{name} works on contrast pairs: {what} must have shape [layers, n, 2, d], "
                f"got {tuple(x.shape)}"
            )
    elif x.ndim != 3:
        raise QuirkyError(f"{name}: {what} must have shape [layers, n, features], got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[-1] == 0:
        raise QuirkyError(f"{name}: {what} have no layers or no features (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise QuirkyError(f"{name}: {what} must be floating point, got {x.dtype}")
    # one reduction per layer (no full-size mask); a non-finite sum flags the layers to inspect in detail.  The
    # sum runs in the input's own precision (float32 for half inputs): a float64 accumulation of float32 data is
    # an order of magnitude slower, and an overflow only sends a layer to the exact check below.
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    sums = x.reshape(x.shape[0], -1).sum(dim=1, dtype=acc)
    suspects = (~torch.isfinite(sums)).nonzero().flatten().tolist()
    layers = [i for i in suspects if not bool(torch.isfinite(x[i]).all())]
    if layers:
        raise QuirkyError(
            f"{name}: {what} contain NaN or inf values (layers {layers[:8]}{'...' if len(layers) > 8 else ''}); "
            "re-extract the activations or drop those layers"
        )


def check_labels(y: Tensor, n: int, *, name: str, need_both: bool = True) -> Tensor:
    """Labels as a float tensor of 0/1 with length n; both classes required unless `need_both` is False."""
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise QuirkyError(f"{name}: labels must have shape [{n}] (one per example), got {tuple(y.shape)}")
    if n == 0:
        raise QuirkyError(f"{name}: cannot fit on an empty training set (0 examples)")
    yf = y.to(torch.float64)
    if bool(torch.isnan(yf).any()) or not bool(((yf == 0) | (yf == 1)).all()):
        raise QuirkyError(f"{name}: labels must be 0/1 (or bool), got values {torch.unique(yf)[:5].tolist()}")
    if need_both:
        n_pos = int(yf.sum())
        if n_pos == 0 or n_pos == n:
            raise QuirkyError(
                f"{name}: the training labels hold a single class ({n_pos} positive of {n}); a probe needs "
                "both classes (choose a training subset or label column with both)"
            )
    return yf


class Probe(ABC):
    """Base class: subclasses set `name`, `pair`, implement `_fit`, `_score` and list their state keys."""

    name: ClassVar[str]
    pair: ClassVar[bool] = False
    linear: ClassVar[bool] = True
    state_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.state: dict[str, Tensor] = {}

    # ---- hyperparameters -------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable hyperparameters (constructor keyword arguments)."""
        return {}

    # ---- fitting and scoring ---------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return bool(self.state)

    def fit(self, x: Tensor, y: Tensor) -> Self:
        check_features(x, pair=self.pair, name=self.name, what="training features")
        yf = check_labels(y, x.shape[1], name=self.name)
        dt = compute_dtype(x)
        with torch.no_grad():
            self.state = {}
            self._fit(x.to(dt), yf.to(device=x.device, dtype=dt))
        return self

    def score(self, x: Tensor) -> Tensor:
        """Scores [L, n] on the input's device (float32 unless the input is float64)."""
        if not self.fitted:
            raise QuirkyError(f"{self.name}: call fit() (or load a saved probe) before score()")
        check_features(x, pair=self.pair, name=self.name)
        expect = self.expected_shape
        if x.shape[0] != expect[0] or x.shape[-1] != expect[1]:
            raise QuirkyError(
                f"{self.name}: probe was fitted on {expect[0]} layers x {expect[1]} features, but the input "
                f"has {x.shape[0]} layers x {x.shape[-1]} features (mismatched model or layer selection)"
            )
        dt = compute_dtype(x)
        state = {
            k: v.to(device=x.device, dtype=dt) if v.is_floating_point() else v for k, v in self.state.items()
        }
        with torch.no_grad():
            return self._score(x.to(dt), state)

    @property
    def expected_shape(self) -> tuple[int, int]:
        """(layers, size of the input's last dim) this probe accepts; concatenated-pair probes override it."""
        w = self.state["direction"]
        return int(w.shape[0]), int(w.shape[-1])

    @abstractmethod
    def _fit(self, x: Tensor, y: Tensor) -> None: ...

    @abstractmethod
    def _score(self, x: Tensor, state: dict[str, Tensor]) -> Tensor: ...

    # ---- input-space linear view (used by interventions) -----------------------------------------------
    @property
    def direction(self) -> Tensor:
        """[L, f]: score = x . direction + bias, in the probe's input space."""
        return self.state["direction"]

    @property
    def bias(self) -> Tensor:
        """[L]"""
        return self.state["bias"]

    @property
    def num_layers(self) -> int:
        return self.expected_shape[0]

    # ---- serialisation ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.state)

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Write the full state to a safetensors file atomically (metadata: method, config, `extra`)."""
        if not self.fitted:
            raise QuirkyError(f"{self.name}: nothing to save, the probe is not fitted")
        meta = {
            "format": PROBE_FORMAT,
            "format_version": PROBE_FORMAT_VERSION,
            "method": self.name,
            "config": json.dumps(self.get_config(), sort_keys=True),
            "extra": json.dumps(extra or {}, sort_keys=True, default=str),
        }
        tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in sorted(self.state.items())}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, Tensor]) -> Self:
        probe = cls(**config)
        missing = [k for k in cls.state_keys if k not in state]
        if missing:
            raise QuirkyError(f"{cls.name}: saved probe lacks the tensor(s) {', '.join(missing)}")
        probe.state = dict(state)
        return probe


def read_probe_file(
    path: str | os.PathLike[str], device: torch.device | str | None = None
) -> tuple[str, dict[str, Any], dict[str, Tensor], dict[str, Any]]:
    """(method, config, tensors, extra) of a saved probe; QuirkyError for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise QuirkyError(f"no saved probe at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device or "cpu")) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise QuirkyError(f"{path} is not a readable safetensors file: {e}") from e
    if meta.get("format") != PROBE_FORMAT:
        raise QuirkyError(f"{path} is not a quirky probe file (format {meta.get('format')!r})")
    return meta["method"], json.loads(meta["config"]), tensors, json.loads(meta.get("extra", "{}"))


def linear_score(x: Tensor, direction: Tensor, bias: Tensor) -> Tensor:
    """x [L, n, f] . direction [L, f] + bias [L] -> [L, n], one batched matrix-vector product."""
    return torch.bmm(x, direction.unsqueeze(-1)).squeeze(-1) + bias.unsqueeze(-1)


def flatten_pairs(x: Tensor) -> Tensor:
    """[L, n, 2, d] -> [L, n, 2d], the concatenation [h_neg ; h_pos] (a view when x is contiguous)."""
    return x.reshape(x.shape[0], x.shape[1], 2 * x.shape[3])
