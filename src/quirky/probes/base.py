"""The probe interface (Contract 3), input validation and safetensors serialisation.

Every probe is fitted on all layers at once: `fit(x, y)` with x [L, n, f] (pair methods: [L, n, 2, d]) and
labels y [n]; `score(x)` returns [L, n] log-odds-like scores whose sign was resolved on the training data.  The
whole fitted state (weights, bias, scale, normaliser) is a set of declared tensor attributes, so `save` writes
one safetensors file whose metadata names the method and its hyperparameters, and `load_probe` rebuilds an
identical probe (identical scores) on any device.

Why validation lives here: a probe is where bad data first meets linear algebra; a NaN, a single-class label
vector or a wrong shape must become a `QuirkyError` that names the problem, not a LAPACK error three calls deep.
"""

from __future__ import annotations

import inspect
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors import safe_open
from torch import Tensor

from quirky.errors import QuirkyError
from quirky.fileio import write_safetensors

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
    """Base class: subclasses set `name` and `pair`, implement `_fit` and `_score`, and declare their fitted state
    as annotated attributes ending in `_` (scikit-learn's convention).

    Why declared this way: the saved file, the reload check and the reload tests all read the hyperparameters from
    `__init__`'s signature (`get_params`) and the fitted state from the annotations (`fitted_names`), so a new
    option or a new fitted tensor cannot be left out of a saved probe (hand-kept key lists and `get_config`
    methods drifted: LDA's `max_chunk_bytes` was dropped, CCS's `n_iter` was saved but never declared).  Every
    `__init__` argument must be stored as the attribute of the same name.
    """

    name: ClassVar[str]
    pair: ClassVar[bool] = False
    linear: ClassVar[bool] = True

    # ---- hyperparameters -------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The named arguments of `__init__`, in order (`object.__init__`'s *args and **kwargs are not options)."""
        params = inspect.signature(cls.__init__).parameters.values()
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return tuple(p.name for p in params if p.name != "self" and p.kind in named)

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters as `__init__` stored them: `type(p)(**p.get_params())` rebuilds an unfitted copy."""
        missing = [k for k in self.param_names() if not hasattr(self, k)]
        if missing:  # a programming error in a probe class, not a user error
            raise TypeError(f"{self.name}: __init__ does not store its argument(s) {', '.join(missing)}")
        return {k: getattr(self, k) for k in self.param_names()}

    def get_config(self) -> dict[str, Any]:
        """Old name of `get_params` (kept for callers)."""
        return self.get_params()

    # ---- fitted state ----------------------------------------------------------------------------------
    @classmethod
    def fitted_names(cls) -> tuple[str, ...]:
        """The annotated fitted attributes (ending in `_`) of the class and its bases, in declaration order."""
        names: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            for key in inspect.get_annotations(klass):
                if key.endswith("_") and not key.startswith("_"):
                    names[key] = None
        return tuple(names)

    @property
    def fitted(self) -> bool:
        return all(hasattr(self, k) for k in self.fitted_names())

    def state_dict(self) -> dict[str, Tensor]:
        """The fitted tensors by their saved names (the attribute without its trailing `_`)."""
        return {k[:-1]: getattr(self, k) for k in self.fitted_names()}

    def _set_state(self, state: dict[str, Tensor]) -> None:
        for key in self.fitted_names():
            setattr(self, key, state[key[:-1]])

    # ---- fitting and scoring ---------------------------------------------------------------------------
    def fit(self, x: Tensor, y: Tensor) -> Self:
        check_features(x, pair=self.pair, name=self.name, what="training features")
        yf = check_labels(y, x.shape[1], name=self.name)
        dt = compute_dtype(x)
        for key in self.fitted_names():  # a refit must not keep anything of the last fit
            self.__dict__.pop(key, None)
        with torch.no_grad():
            self._fit(x.to(dt), yf.to(device=x.device, dtype=dt))
        declared = set(self.fitted_names())
        set_now = {k for k in vars(self) if k.endswith("_") and not k.startswith("_")}
        if declared != set_now:  # a programming error in a probe class: what it fits is what it saves
            raise TypeError(
                f"{self.name}: fitted attributes {sorted(set_now)} differ from the declared {sorted(declared)}"
            )
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
        with torch.no_grad():
            return self._score(x.to(compute_dtype(x)))

    @staticmethod
    def _like(t: Tensor, x: Tensor) -> Tensor:
        """A fitted tensor on x's device, in x's dtype when floating (a probe fitted on a GPU scores CPU data)."""
        return t.to(device=x.device, dtype=x.dtype) if t.is_floating_point() else t.to(x.device)

    @property
    def expected_shape(self) -> tuple[int, int]:
        """(layers, size of the input's last dim) this probe accepts; concatenated-pair probes override it."""
        w = self.direction_
        return int(w.shape[0]), int(w.shape[-1])

    @abstractmethod
    def _fit(self, x: Tensor, y: Tensor) -> None:
        """Set every declared fitted attribute from x (in the compute dtype) and 0/1 labels y [n]."""

    @abstractmethod
    def _score(self, x: Tensor) -> Tensor: ...

    # ---- input-space linear view (used by interventions) -----------------------------------------------
    @property
    def direction(self) -> Tensor:
        """[L, f]: score = x . direction + bias, in the probe's input space."""
        return self.direction_

    @property
    def bias(self) -> Tensor:
        """[L]"""
        return self.bias_

    @property
    def num_layers(self) -> int:
        return self.expected_shape[0]

    # ---- serialisation ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Write the full state to a safetensors file atomically (metadata: method, params, `extra`)."""
        if not self.fitted:
            raise QuirkyError(f"{self.name}: nothing to save, the probe is not fitted")
        meta = {
            "format": PROBE_FORMAT,
            "format_version": PROBE_FORMAT_VERSION,
            "method": self.name,
            "config": json.dumps(self.get_params(), sort_keys=True),
            "extra": json.dumps(extra or {}, sort_keys=True, default=str),
        }
        tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in sorted(self.state_dict().items())}
        write_safetensors(path, tensors, meta)

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, Tensor]) -> Self:
        """The probe with hyperparameters `config` and the saved tensors `state` (keys without the `_`)."""
        probe = cls(**config)
        missing = [k[:-1] for k in cls.fitted_names() if k[:-1] not in state]
        if missing:
            raise QuirkyError(f"{cls.name}: saved probe lacks the tensor(s) {', '.join(missing)}")
        probe._set_state(state)
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
