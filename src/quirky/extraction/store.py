"""The activation store: one (model, adapter, dataset, split, setup) extraction on disk (Contract 2).

Layout of a store directory::

    store.json              format, version, complete=true, fingerprint, config, shapes, chunk list
    manifest.parquet        one row per example: id, character, label, alice_label, bob_label,
                            difficulty_quantile, template (+ any extra metadata columns)
    chunk-00000.safetensors rows [start, stop) of the split: ``hiddens.{l}`` [m, d], ``pairs.{l}`` [m, 2, d]
    chunk-00001.safetensors for every layer l, ``lm_log_odds`` [m] (float32), optionally
    ...                     ``lm_log_odds_full`` [m] (multi-token log-odds)

Why chunks of rows with one tensor per layer: extraction streams rows to disk chunk by chunk (bounded memory,
resumable: a finished chunk is never recomputed), while probes usually read a few layers of every row; with
``safe_open`` a reader pulls only the requested layers' tensors out of each chunk, never all layers at once.

Storage dtype: float16 by default for extraction (halves the disk and memory cost; probe AUROCs do not move at
fp16 precision, and values that would overflow fp16 are refused with a clear error).  `write_store` keeps the
dtype of the tensors it is given unless told otherwise, so synthetic float32 stores round-trip exactly.
Readers always get the dtype they ask for (float32 by default).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from quirky.errors import QuirkyError
from quirky.fileio import (
    atomic_dir,
    atomic_path,
    fingerprint,
    read_json,
    read_parquet,
    safetensors_problem,
    write_json,
)
from quirky.subsets import EASY, HARD, SUBSETS, subset_mask  # noqa: F401 (SUBSETS re-exported)

STORE_FORMAT = "quirky-activation-store"
STORE_VERSION = 1
STORE_JSON = "store.json"
MANIFEST = "manifest.parquet"

META_COLUMNS = ("id", "character", "label", "alice_label", "bob_label", "difficulty_quantile", "template")
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.safetensors"


def dtype_name(dtype: torch.dtype) -> str:
    for name, dt in STORAGE_DTYPES.items():
        if dt == dtype:
            return name
    raise QuirkyError(f"unsupported storage dtype {dtype}; choose one of {', '.join(STORAGE_DTYPES)}")


def parse_storage_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        dtype_name(dtype)  # validates
        return dtype
    if dtype not in STORAGE_DTYPES:
        raise QuirkyError(f"unknown storage dtype {dtype!r}; choose one of {', '.join(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[dtype]


def store_fingerprint(config: dict[str, Any]) -> str:
    """The fingerprint of a store: a hash of its config (minus `runtime`, which holds settings such as the
    batch size that change only float rounding, not what was extracted)."""
    return fingerprint({k: v for k, v in config.items() if k != "runtime"})


def _cast_checked(x: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """Cast for storage, refusing NaN/inf and values that overflow the storage dtype (they would be stored as inf)."""
    x = x.detach().cpu()
    if not torch.isfinite(x).all():
        raise QuirkyError(
            f"{what} contains NaN or inf values; the model's activations are not usable as they are"
        )
    y = x.to(dtype).contiguous()
    if not torch.isfinite(y).all():
        raise QuirkyError(
            f"{what} has values too large for {dtype_name(dtype)} storage (max |x| = {x.abs().max().item():.3g}); "
            "use a wider storage dtype (e.g. --store-dtype float32)"
        )
    return y


def write_chunk(
    path: str | os.PathLike[str],
    *,
    hiddens: torch.Tensor,
    pairs: torch.Tensor,
    lm_log_odds: torch.Tensor,
    lm_log_odds_full: torch.Tensor | None = None,
    storage_dtype: torch.dtype,
) -> None:
    """Write one chunk file atomically: `hiddens` [L, m, d], `pairs` [L, m, 2, d], `lm_log_odds` [m]."""
    num_layers = hiddens.shape[0]
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(num_layers):
        tensors[f"hiddens.{layer}"] = _cast_checked(
            hiddens[layer], storage_dtype, f"hidden states (layer {layer})"
        )
        tensors[f"pairs.{layer}"] = _cast_checked(
            pairs[layer], storage_dtype, f"contrast-pair states (layer {layer})"
        )
    tensors["lm_log_odds"] = _cast_checked(lm_log_odds, torch.float32, "LM log-odds")
    if lm_log_odds_full is not None:
        tensors["lm_log_odds_full"] = _cast_checked(
            lm_log_odds_full, torch.float32, "multi-token LM log-odds"
        )
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": STORE_FORMAT})


def _validate_meta(meta: pd.DataFrame, n: int) -> pd.DataFrame:
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise QuirkyError(
            f"store metadata lacks the column(s) {', '.join(missing)} (needed: {', '.join(META_COLUMNS)})"
        )
    if len(meta) != n:
        raise QuirkyError(f"store metadata has {len(meta)} rows but the tensors have {n}")
    meta = meta.reset_index(drop=True).copy()
    for col in ("label", "alice_label", "bob_label", "template"):
        meta[col] = meta[col].astype("int64")
    meta["difficulty_quantile"] = meta["difficulty_quantile"].astype("float64")
    meta["id"] = meta["id"].astype(str)
    meta["character"] = meta["character"].astype(str)
    ordered = list(META_COLUMNS) + [c for c in meta.columns if c not in META_COLUMNS]
    return meta[ordered]


def finalize_store(
    directory: str | os.PathLike[str],
    *,
    meta: pd.DataFrame,
    config: dict[str, Any],
    chunks: Sequence[tuple[int, int]],
    num_layers: int,
    hidden_size: int,
    storage_dtype: torch.dtype,
    has_full_log_odds: bool = False,
) -> None:
    """Write the manifest and `store.json` (last: its `complete: true` is what marks the store finished)."""
    directory = Path(directory)
    n = chunks[-1][1] if chunks else 0
    meta = _validate_meta(meta, n)
    with atomic_path(directory / MANIFEST) as tmp:
        meta.to_parquet(tmp, index=False)
    write_json(
        directory / STORE_JSON,
        {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "complete": True,
            "fingerprint": store_fingerprint(config),
            "config": config,
            "n": n,
            "num_layers": num_layers,
            "hidden_size": hidden_size,
            "storage_dtype": dtype_name(storage_dtype),
            "has_full_log_odds": has_full_log_odds,
            "chunks": [{"file": chunk_name(i), "start": a, "stop": b} for i, (a, b) in enumerate(chunks)],
        },
    )


def write_store(
    path: str | os.PathLike[str],
    *,
    hiddens: torch.Tensor,
    pairs: torch.Tensor,
    lm_log_odds: torch.Tensor,
    meta: pd.DataFrame,
    config: dict[str, Any],
    storage_dtype: str | torch.dtype | None = None,
    lm_log_odds_full: torch.Tensor | None = None,
    chunk_size: int = 4096,
) -> ActivationStore:
    """Write a complete store atomically from in-memory tensors (used by tests and synthetic stores).

    `hiddens` [L, n, d], `pairs` [L, n, 2, d], `lm_log_odds` [n]; `storage_dtype` defaults to `hiddens.dtype`.
    """
    if hiddens.ndim != 3:
        raise QuirkyError(f"hiddens must be [layers, n, d], got shape {tuple(hiddens.shape)}")
    num_layers, n, d = hiddens.shape
    if tuple(pairs.shape) != (num_layers, n, 2, d):
        raise QuirkyError(
            f"pairs must be [layers, n, 2, d] = {(num_layers, n, 2, d)}, got {tuple(pairs.shape)}"
        )
    if tuple(lm_log_odds.shape) != (n,):
        raise QuirkyError(f"lm_log_odds must be [n] = ({n},), got {tuple(lm_log_odds.shape)}")
    dtype = parse_storage_dtype(storage_dtype) if storage_dtype is not None else hiddens.dtype
    if dtype not in STORAGE_DTYPES.values():
        dtype = torch.float32
    bounds = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)] or [(0, 0)]
    path = Path(path)
    with atomic_dir(path) as tmp:
        for i, (a, b) in enumerate(bounds):
            write_chunk(
                tmp / chunk_name(i),
                hiddens=hiddens[:, a:b],
                pairs=pairs[:, a:b],
                lm_log_odds=lm_log_odds[a:b],
                lm_log_odds_full=None if lm_log_odds_full is None else lm_log_odds_full[a:b],
                storage_dtype=dtype,
            )
        finalize_store(
            tmp,
            meta=meta,
            config=config,
            chunks=bounds,
            num_layers=num_layers,
            hidden_size=d,
            storage_dtype=dtype,
            has_full_log_odds=lm_log_odds_full is not None,
        )
    return open_store(path)


def read_store_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """`store.json` of a complete store, or None when `path` holds no finished store."""
    f = Path(path) / STORE_JSON
    if not f.is_file():
        return None
    info = read_json(f)
    if not isinstance(info, dict) or info.get("format") != STORE_FORMAT or not info.get("complete"):
        return None
    return info


def _check_files(path: Path, info: dict[str, Any]) -> None:
    """Cheap checks before trusting a store: store.json has the fields every reader uses, and every chunk is a
    complete safetensors file (a truncated or half-copied store is an error, not a crash deep in a reader)."""
    try:
        chunks = [(str(c["file"]), int(c["start"]), int(c["stop"])) for c in info["chunks"]]
        for key in ("n", "num_layers", "hidden_size"):
            int(info[key])
    except (KeyError, TypeError, ValueError):
        raise QuirkyError(
            f"{path / STORE_JSON} is damaged (missing or malformed fields); re-extract the store"
        ) from None
    for name, _, _ in chunks:
        problem = safetensors_problem(path / name) if (path / name).is_file() else None
        if problem is not None:
            raise QuirkyError(f"the store at {path} is damaged: {name} is {problem}; re-extract it")


@dataclass
class ActivationStore:
    """Read access to a finished store; tensors are loaded lazily, only the layers asked for."""

    path: Path
    info: dict[str, Any]
    meta: pd.DataFrame

    @property
    def config(self) -> dict[str, Any]:
        return self.info["config"]

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]

    @property
    def n(self) -> int:
        return int(self.info["n"])

    @property
    def num_layers(self) -> int:
        return int(self.info["num_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.info["hidden_size"])

    @property
    def storage_dtype(self) -> str:
        return self.info["storage_dtype"]

    def _layers(self, layers: int | Iterable[int] | None) -> list[int]:
        if layers is None:
            return list(range(self.num_layers))
        seq = [layers] if isinstance(layers, int) else list(layers)
        out = []
        for layer in seq:
            idx = int(layer)
            if not -self.num_layers <= idx < self.num_layers:
                raise QuirkyError(
                    f"layer {layer} is out of range: this store has layers 0..{self.num_layers - 1}"
                )
            out.append(idx % self.num_layers)
        return out

    def _read(self, key: str, layers: list[int], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        out = torch.empty((len(layers), self.n, *shape), dtype=dtype)
        for chunk in self.info["chunks"]:
            a, b = chunk["start"], chunk["stop"]
            if a == b:
                continue
            with safe_open(self.path / chunk["file"], framework="pt") as f:
                for i, layer in enumerate(layers):
                    out[i, a:b] = f.get_tensor(f"{key}.{layer}").to(dtype)
        return out

    def hiddens(
        self, layers: int | Iterable[int] | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Residual stream at the last prompt token: [L, n, d] (layers in the order asked for)."""
        return self._read("hiddens", self._layers(layers), (self.hidden_size,), dtype)

    def pairs(
        self, layers: int | Iterable[int] | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Contrast-pair states at the appended first answer token: [L, n, 2, d] (choice 0, choice 1)."""
        return self._read("pairs", self._layers(layers), (2, self.hidden_size), dtype)

    def lm_log_odds(self, full: bool = False) -> torch.Tensor:
        """logit(choice 1) - logit(choice 0) of the first answer tokens: [n] float32.

        `full=True` gives the multi-token log-odds (sum of the choices' token log-probs), if it was extracted.
        """
        key = "lm_log_odds_full" if full else "lm_log_odds"
        if full and not self.info.get("has_full_log_odds"):
            raise QuirkyError(
                f"the store at {self.path} has no multi-token log-odds; re-extract with --full-log-odds"
            )
        out = torch.empty(self.n, dtype=torch.float32)
        for chunk in self.info["chunks"]:
            a, b = chunk["start"], chunk["stop"]
            if a == b:
                continue
            with safe_open(self.path / chunk["file"], framework="pt") as f:
                out[a:b] = f.get_tensor(key).to(torch.float32)
        return out

    def mask(self, subset: str, easy: float = EASY, hard: float = HARD) -> np.ndarray:
        """Boolean row mask for a persona/difficulty subset (all, A, B, AE, AH, BE, BH): `quirky.subsets`'s rule."""
        return subset_mask(self.meta, subset, easy, hard)


def open_store(path: str | os.PathLike[str]) -> ActivationStore:
    """Open a finished store; a clear error for a missing, foreign or unfinished (interrupted) directory."""
    path = Path(path)
    if not path.is_dir():
        raise QuirkyError(
            f"no activation store at {path}: the directory does not exist (run `quirky extract` first)"
        )
    f = path / STORE_JSON
    if not f.is_file():
        raise QuirkyError(
            f"{path} is not a finished activation store (no {STORE_JSON}); run `quirky extract` to make it"
        )
    info = read_json(f)
    if not isinstance(info, dict):
        raise QuirkyError(f"{f} is not a quirky activation store (not a JSON object); re-extract it")
    if info.get("format") != STORE_FORMAT:
        raise QuirkyError(f"{f} is not a quirky activation store (format {info.get('format')!r})")
    if info.get("version") != STORE_VERSION:
        raise QuirkyError(
            f"{path} was written in store format version {info.get('version')}, this quirky reads version "
            f"{STORE_VERSION}; re-extract it"
        )
    if not info.get("complete"):
        raise QuirkyError(
            f"the store at {path} is incomplete; rerun `quirky extract` with the same settings to finish it"
        )
    _check_files(path, info)
    missing = [c["file"] for c in info["chunks"] if not (path / c["file"]).is_file()]
    if not (path / MANIFEST).is_file():
        missing.append(MANIFEST)
    if missing:
        raise QuirkyError(f"the store at {path} is damaged: missing {', '.join(missing)}; re-extract it")
    meta = read_parquet(path / MANIFEST, columns=list(META_COLUMNS))
    return ActivationStore(path=path, info=info, meta=meta)
