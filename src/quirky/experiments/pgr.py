"""PGR, "performance gap recovered" (Mallen & Belrose, arXiv 2312.01037; the original's
`elk_generalization/results/figures.ipynb`), per method and averaged the reference's way.

For a method m trained on s and applied to t:  PGR = (AUC_m - floor) / (ceiling - floor), where AUC_m is the
AUROC against Alice's labels at m's earliest informative layer (EIL on s), the floor is the *final-layer* `lr`
AUROC of B -> BH (the weak floor: a probe trained on Bob's labels) and the ceiling the final-layer `lr` AUROC of
A -> AH (the strong ceiling), all against Alice's labels on all examples.  The A -> B table uses the floor B -> B
and the ceiling A -> A.

Averages follow the reference ("averaging before taking difference and ratio"): for each dataset AUC, floor and
ceiling are first averaged over models, and the averaged row is
    (mean_k AUC - mean_k floor) / (mean_k ceiling - mean_k floor)
over datasets k, not the mean of per-dataset ratios (which capitals/authors, where ceiling ~ floor, would
dominate).  NaNs are dropped from *both* the sum and the count (the reference divided by the full count,
`elk_generalization/results/viz.py:181-191`).  Within one run the method average is the same construction over
methods (equal to the mean PGR, since they share floor and ceiling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PgrSpec:
    """One PGR table: methods trained on `train`, evaluated on `test`, between the `lr` floor and ceiling."""

    name: str
    train: str
    test: str
    floor: tuple[str, str]  # (train, test) of the final-layer lr floor
    ceiling: tuple[str, str]  # (train, test) of the final-layer lr ceiling
    label_col: str = "alice_label"
    filter: str = "all"
    reference_method: str = "lr"
    # unsupervised methods trained on `all` (with Alice labels for the sign only) also get a row in this table
    alt_trains: tuple[str, ...] = ()


DEFAULT_PGR_SPECS: tuple[PgrSpec, ...] = (
    PgrSpec("AE->BH", "AE", "BH", floor=("B", "BH"), ceiling=("A", "AH"), alt_trains=("all@alice_label",)),
    PgrSpec("A->B", "A", "B", floor=("B", "B"), ceiling=("A", "A")),
)


def pgr(auc: float, floor: float, ceiling: float) -> float:
    """(auc - floor) / (ceiling - floor); NaN if any input is NaN or the gap is zero."""
    vals = (auc, floor, ceiling)
    if any(v is None or not math.isfinite(float(v)) for v in vals):
        return math.nan
    gap = float(ceiling) - float(floor)
    if gap == 0.0:
        return math.nan
    return (float(auc) - float(floor)) / gap


def average_pgr(
    rows: pd.DataFrame,
    *,
    by: Sequence[str] = ("table", "method", "train"),
    exclude_datasets: Sequence[str] = (),
) -> pd.DataFrame:
    """Per-dataset and averaged PGR from per-(model, dataset) rows with columns `model, dataset, auc, floor,
    ceiling` plus the `by` columns.

    Returns one row per (by..., dataset) with model-averaged auc/floor/ceiling and their PGR, plus one row per
    `by` group with dataset = "average" computed as the ratio of dataset-averaged differences.
    """
    df = rows[~rows["dataset"].isin(list(exclude_datasets))]
    keys = list(by)
    per_ds = df.groupby([*keys, "dataset"], sort=True, dropna=False)[["auc", "floor", "ceiling"]].mean()
    per_ds = per_ds.reset_index()
    per_ds["pgr"] = [
        pgr(a, f, c) for a, f, c in zip(per_ds["auc"], per_ds["floor"], per_ds["ceiling"], strict=True)
    ]
    avg_rows = []
    for group, g in per_ds.groupby(keys, sort=True, dropna=False):
        ok = g[["auc", "floor", "ceiling"]].notna().all(axis=1)
        g = g[ok]
        auc, floor, ceiling = (
            float(np.mean(g[c])) if len(g) else math.nan for c in ("auc", "floor", "ceiling")
        )
        group = group if isinstance(group, tuple) else (group,)
        avg_rows.append(
            {
                **dict(zip(keys, group, strict=True)),
                "dataset": "average",
                "auc": auc,
                "floor": floor,
                "ceiling": ceiling,
                "pgr": pgr(auc, floor, ceiling),
                "n_datasets": len(g),
            }
        )
    per_ds["n_datasets"] = 1
    return pd.concat([per_ds, pd.DataFrame(avg_rows)], ignore_index=True)
