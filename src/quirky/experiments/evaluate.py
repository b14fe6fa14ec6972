"""Scoring one probe's test scores: per-layer metrics for every label column and agreement filter.

Rows of the tidy results table come from here.  For each filter (all examples, those where Alice and Bob agree,
those where they disagree) and each label column (`label`, `alice_label`, `bob_label`): AUROC with a percentile
bootstrap CI, accuracy at threshold 0 (meaningful because every probe's bias and scale are fitted) with its CI,
and recall at a fixed false-positive rate.  The bootstrap resamples depend only on (seed, test subset, filter),
so every method and layer is resampled identically (paired intervals) and reruns are byte-identical.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from quirky.experiments.grid import LABEL_COLUMNS
from quirky.experiments.probe_run import empty_note, single_class_note
from quirky.probes.metrics import (
    accuracy,
    auroc_columns,
    bootstrap_accuracy,
    bootstrap_auroc_columns,
    bootstrap_counts,
    honest_quantile_levels,
    percentile_ci,
    recall_at_fpr,
)

FILTERS: tuple[str, ...] = ("all", "agree", "disagree")
METRIC_COLUMNS = (
    "n",
    "n_pos",
    "auroc",
    "auroc_lo",
    "auroc_hi",
    "acc",
    "acc_lo",
    "acc_hi",
    "recall_at_fpr",
)


@dataclass(frozen=True)
class EvalSettings:
    n_boot: int = 1000
    seed: int = 0
    fpr: float = 0.05
    ci_level: float = 0.95
    label_columns: tuple[str, ...] = LABEL_COLUMNS
    filters: tuple[str, ...] = FILTERS
    random_min_tail: int = 10


def filter_mask(meta: pd.DataFrame, filt: str) -> np.ndarray:
    agree = meta["alice_label"].to_numpy() == meta["bob_label"].to_numpy()
    if filt == "all":
        return np.ones(len(meta), dtype=bool)
    if filt == "agree":
        return agree
    if filt == "disagree":
        return ~agree
    raise ValueError(f"unknown filter {filt!r}")


class Resamples:
    """Bootstrap multiplicities per (test subset, filter), drawn once and shared by every method and layer."""

    def __init__(self, settings: EvalSettings, device: torch.device) -> None:
        self.settings, self.device = settings, device
        self._cache: dict[tuple[str, str, int], Tensor] = {}

    def counts(self, test: str, filt: str, n: int) -> Tensor:
        """float64 [n_boot, n] multiplicities.  Cached as small integers (a multiplicity is at most n): the
        float64 copies of every (subset, filter) of a grid would hold n_boot x 8 bytes per test example."""
        key = (test, filt, n)
        if key not in self._cache:
            seed = zlib.crc32(f"{self.settings.seed}:{test}:{filt}".encode())
            compact = torch.int16 if n <= torch.iinfo(torch.int16).max else torch.int32
            self._cache[key] = bootstrap_counts(n, self.settings.n_boot, seed, self.device).to(compact)
        return self._cache[key].to(torch.float64)


class _Columns:
    """Accumulates per-layer blocks of result columns; one DataFrame at the end (pandas per block is slow)."""

    def __init__(self) -> None:
        self.blocks: list[dict[str, np.ndarray]] = []

    def add(self, num_layers: int, **cols: object) -> None:
        self.blocks.append({k: np.broadcast_to(np.asarray(v), (num_layers,)) for k, v in cols.items()})

    def frame(self) -> pd.DataFrame:
        if not self.blocks:
            return pd.DataFrame()
        return pd.DataFrame({k: np.concatenate([b[k] for b in self.blocks]) for k in self.blocks[0]})


def evaluate_scores(
    scores: Tensor,
    meta: pd.DataFrame,
    test: str,
    settings: EvalSettings,
    resamples: Resamples,
    layers: np.ndarray | None = None,
) -> pd.DataFrame:
    """Metric rows for scores [L, m] of the m examples described by `meta` (the test subset's manifest rows).

    Columns: layer, label_col, filter, then METRIC_COLUMNS and `note` ("" or why a value is NaN).
    """
    num_layers = scores.shape[0]
    layer_ids = np.arange(num_layers) if layers is None else np.asarray(layers)
    out = _Columns()
    nan = np.full(num_layers, math.nan)
    for filt in settings.filters:
        fmask = filter_mask(meta, filt)
        idx = torch.as_tensor(np.flatnonzero(fmask), device=scores.device)
        s = scores.index_select(1, idx)
        m = int(fmask.sum())
        counts = resamples.counts(test, filt, m) if m > 0 and settings.n_boot > 0 else None
        cols = list(settings.label_columns)
        y_all = np.stack([meta[col].to_numpy()[fmask].astype(np.float64) for col in cols]) if cols else None
        notes, per_col = [], []
        for j, col in enumerate(cols):
            n_pos = int(y_all[j].sum()) if m > 0 and y_all is not None else 0
            note = ""
            if m == 0:
                note = empty_note(test, filt)
            elif n_pos in (0, m):
                note = single_class_note(col, test, filt)
            notes.append(note)
            per_col.append((n_pos, dict.fromkeys(METRIC_COLUMNS[2:], nan)))
        if m > 0 and cols:
            # all label columns at once: one sort per layer for the point AUROCs, one per layer for every
            # resample of every column whose AUROC is defined (see `bootstrap_auroc_columns`)
            y_t = torch.as_tensor(y_all, device=scores.device)
            au = auroc_columns(s, y_t).cpu().numpy()
            defined = [j for j, note in enumerate(notes) if not note]
            boot = None
            if counts is not None and defined:
                lo, hi = percentile_ci(
                    bootstrap_auroc_columns(s, y_t[defined], counts).reshape(-1, counts.shape[0]),
                    settings.ci_level,
                )
                boot = (lo.reshape(num_layers, -1).cpu().numpy(), hi.reshape(num_layers, -1).cpu().numpy())
            for j, (_, metrics) in enumerate(per_col):
                y = y_t[j]
                metrics.update(
                    auroc=au[:, j],
                    acc=accuracy(s, y).cpu().numpy(),
                    recall_at_fpr=recall_at_fpr(s, y, settings.fpr).cpu().numpy(),
                )
                if counts is not None:
                    alo, ahi = percentile_ci(bootstrap_accuracy(s, y, counts), settings.ci_level)
                    metrics.update(acc_lo=alo.cpu().numpy(), acc_hi=ahi.cpu().numpy())
                    if boot is not None and j in defined:
                        k = defined.index(j)
                        metrics.update(auroc_lo=boot[0][:, k], auroc_hi=boot[1][:, k])
        for col, note, (n_pos, metrics) in zip(cols, notes, per_col, strict=True):
            out.add(
                num_layers,
                layer=layer_ids,
                label_col=col,
                filter=filt,
                n=m,
                n_pos=n_pos,
                **metrics,
                note=note,
            )
    return out.frame()


def evaluate_random(
    scores: Tensor, meta: pd.DataFrame, test: str, settings: EvalSettings
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Tensor]]:
    """The random baseline on scores [L, K, m]: per layer the mean AUROC over the K directions (auroc_lo/hi are
    the 2.5%/97.5% quantiles *over directions*, not a bootstrap), a quantile table restricted to levels that K
    draws can estimate, and the raw per-direction AUROCs [L, K] (for saving)."""
    num_layers, k, _ = scores.shape
    levels = honest_quantile_levels(k, settings.random_min_tail)
    rows, qrows, dists = _Columns(), _Columns(), {}
    for filt in settings.filters:
        fmask = filter_mask(meta, filt)
        idx = torch.as_tensor(np.flatnonzero(fmask), device=scores.device)
        m = int(fmask.sum())
        cols = list(settings.label_columns)
        y_all = np.stack([meta[col].to_numpy()[fmask].astype(np.float64) for col in cols]) if cols else None
        all_aucs = torch.full((len(cols), num_layers, k), math.nan, dtype=torch.float64)
        if m > 0 and cols:
            # one sort per (layer, direction) serves every label column; the filter's columns are gathered a
            # layer at a time (a copy of all [L, K, m] scores would double the baseline's memory)
            y_t = torch.as_tensor(y_all, device=scores.device)
            for layer in range(num_layers):
                aucs = auroc_columns(scores[layer].index_select(1, idx), y_t)  # [K, columns]
                all_aucs[:, layer] = aucs.T.cpu()
        for j, col in enumerate(cols):
            n_pos = int(y_all[j].sum()) if m > 0 and y_all is not None else 0
            aucs = all_aucs[j]
            if m == 0:
                note = empty_note(test, filt)
            else:
                note = single_class_note(col, test, filt) if n_pos in (0, m) else ""
            dists[f"{col}/{filt}"] = aucs.to(torch.float32)
            mean = aucs.mean(dim=1).numpy()
            if k * 0.025 >= settings.random_min_tail and not note:
                band = torch.quantile(aucs, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=1).numpy()
            else:
                band = np.full((2, num_layers), math.nan)
            nan = np.full(num_layers, math.nan)
            rows.add(
                num_layers,
                layer=np.arange(num_layers),
                label_col=col,
                filter=filt,
                n=m,
                n_pos=n_pos,
                auroc=mean,
                auroc_lo=band[0],
                auroc_hi=band[1],
                acc=nan,
                acc_lo=nan,
                acc_hi=nan,
                recall_at_fpr=nan,
                note=note,
            )
            if levels and not note:
                q = torch.quantile(aucs, torch.tensor(levels, dtype=torch.float64), dim=1).numpy()  # [Q, L]
                for qi, level in enumerate(levels):
                    qrows.add(
                        num_layers,
                        layer=np.arange(num_layers),
                        label_col=col,
                        filter=filt,
                        quantile=level,
                        auroc=q[qi],
                        n_directions=k,
                    )
    return rows.frame(), qrows.frame(), dists
