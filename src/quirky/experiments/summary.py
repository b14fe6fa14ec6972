"""From the tidy results table to the headline numbers: EIL per probe, PGR tables, the JSON summary.

Kept apart from the runner so that the report stage (and tests) can recompute them from `results.parquet`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from quirky.experiments.grid import Experiment, split_tag, train_tag
from quirky.experiments.layer_selection import earliest_informative_layer
from quirky.experiments.pgr import PgrSpec, pgr
from quirky.experiments.probe_run import single_class_note

NON_PROBES = ("lm", "random")
EIL_COLUMNS = ("model", "dataset", "method", "train", "train_label", "eil_layer", "eil_fraction", "eil_auroc")
PGR_COLUMNS = (
    "model",
    "dataset",
    "table",
    "method",
    "train",
    "test",
    "eil_layer",
    "auc",
    "floor",
    "ceiling",
    "pgr",
)


def _num(x: Any) -> float | None:
    """JSON-safe number: NaN/inf become null (strict JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _layer_curve(df: pd.DataFrame) -> np.ndarray:
    return df.sort_values("layer")["auroc"].to_numpy(dtype=np.float64)


def eil_table(results: pd.DataFrame, num_layers: int) -> pd.DataFrame:
    """EIL of every probe (method x training set), from its AUROC on its own training subset of the test split,
    all examples, against its training label column."""
    probes = results[~results["method"].isin(NON_PROBES)]
    src = probes[
        (probes["test"] == probes["train"])
        & (probes["label_col"] == probes["train_label"])
        & (probes["filter"] == "all")
    ]
    rows = []
    keys = ["model", "dataset", "method", "train", "train_label"]
    for key, g in src.groupby(keys, sort=False):
        curve = _layer_curve(g)
        layer = earliest_informative_layer(curve)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "eil_layer": layer,
                "eil_fraction": (layer + 1) / num_layers,
                "eil_auroc": float(curve[layer]),
            }
        )
    return pd.DataFrame(rows, columns=list(EIL_COLUMNS))


def _lookup(
    results: pd.DataFrame,
    method: str,
    train: str,
    train_label: str,
    test: str,
    label_col: str,
    filt: str,
    layer: int,
) -> float:
    r = results[
        (results["method"] == method)
        & (results["train"] == train)
        & (results["train_label"] == train_label)
        & (results["test"] == test)
        & (results["label_col"] == label_col)
        & (results["filter"] == filt)
        & (results["layer"] == layer)
    ]
    return float(r["auroc"].iloc[0]) if len(r) else math.nan


def pgr_table(
    results: pd.DataFrame, eil: pd.DataFrame, specs: tuple[PgrSpec, ...], num_layers: int
) -> pd.DataFrame:
    """One row per (PGR table, method, training set) present in the results."""
    rows = []
    last = num_layers - 1
    for spec in specs:
        f_train, f_label = split_tag(spec.floor[0])
        c_train, c_label = split_tag(spec.ceiling[0])
        floor = _lookup(
            results, spec.reference_method, f_train, f_label, spec.floor[1], spec.label_col, spec.filter, last
        )
        ceiling = _lookup(
            results,
            spec.reference_method,
            c_train,
            c_label,
            spec.ceiling[1],
            spec.label_col,
            spec.filter,
            last,
        )
        for e in eil.itertuples(index=False):
            tag = train_tag(e.train, e.train_label)
            if tag not in (spec.train, *spec.alt_trains):
                continue
            auc = _lookup(
                results,
                e.method,
                e.train,
                e.train_label,
                spec.test,
                spec.label_col,
                spec.filter,
                int(e.eil_layer),
            )
            has_test = bool(
                (
                    (results["method"] == e.method)
                    & (results["train"] == e.train)
                    & (results["train_label"] == e.train_label)
                    & (results["test"] == spec.test)
                ).any()
            )
            if not has_test:
                continue
            rows.append(
                {
                    "model": e.model,
                    "dataset": e.dataset,
                    "table": spec.name,
                    "method": e.method,
                    "train": tag,
                    "test": spec.test,
                    "eil_layer": int(e.eil_layer),
                    "auc": auc,
                    "floor": floor,
                    "ceiling": ceiling,
                    "pgr": pgr(auc, floor, ceiling),
                }
            )
    return pd.DataFrame(rows, columns=list(PGR_COLUMNS))


def _aurocs_at(results: pd.DataFrame, sel: pd.Series, layer: int) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    sub = results[sel & (results["layer"] == layer)]
    for r in sub.itertuples(index=False):
        out.setdefault(r.filter, {})[r.label_col] = _num(r.auroc)
    return out


def build_summary(
    results: pd.DataFrame,
    eil: pd.DataFrame,
    pgr_rows: pd.DataFrame,
    specs: tuple[PgrSpec, ...],
    grid: dict[str, list[Experiment]],
    num_layers: int,
) -> dict[str, Any]:
    """The JSON summary: EIL and transfer AUROCs per probe, PGR tables with the method average, the LM baseline,
    the random baseline at the probes' typical EIL, and every note explaining a NaN."""
    eil_out: dict[str, dict[str, Any]] = {}
    for e in eil.itertuples(index=False):
        base = (
            (results["method"] == e.method)
            & (results["train"] == e.train)
            & (results["train_label"] == e.train_label)
        )
        transfer = {}
        for test in results.loc[base, "test"].drop_duplicates():
            transfer[test] = _aurocs_at(results, base & (results["test"] == test), int(e.eil_layer))
        eil_out.setdefault(e.method, {})[train_tag(e.train, e.train_label)] = {
            "layer": int(e.eil_layer),
            "layer_fraction": float(e.eil_fraction),
            "auroc": _num(e.eil_auroc),
            "transfer": transfer,
        }
    pgr_out: dict[str, Any] = {}
    for spec in specs:
        rows = pgr_rows[pgr_rows["table"] == spec.name]
        if not len(rows):
            continue
        floor, ceiling = float(rows["floor"].iloc[0]), float(rows["ceiling"].iloc[0])
        aucs = rows["auc"].to_numpy(dtype=np.float64)
        finite = aucs[np.isfinite(aucs)]
        mean_auc = float(finite.mean()) if finite.size else math.nan
        pgr_out[spec.name] = {
            "floor": _num(floor),
            "ceiling": _num(ceiling),
            "floor_experiment": f"{spec.reference_method} {spec.floor[0]}->{spec.floor[1]} (final layer)",
            "ceiling_experiment": f"{spec.reference_method} {spec.ceiling[0]}->{spec.ceiling[1]} (final layer)",
            "label_col": spec.label_col,
            "filter": spec.filter,
            "methods": {
                f"{r.method}" if r.train == spec.train else f"{r.method} ({r.train})": {
                    "train": r.train,
                    "eil_layer": int(r.eil_layer),
                    "auroc": _num(r.auc),
                    "pgr": _num(r.pgr),
                }
                for r in rows.itertuples(index=False)
            },
            "method_average": {"auroc": _num(mean_auc), "pgr": _num(pgr(mean_auc, floor, ceiling))},
        }
    lm = results[results["method"] == "lm"]
    lm_out = {}
    for test in lm["test"].drop_duplicates():
        lm_out[test] = _aurocs_at(results, (results["method"] == "lm") & (results["test"] == test), -1)
    random_out: dict[str, Any] = {}
    rnd = results[results["method"] == "random"]
    if len(rnd):
        mid = int(np.median(eil["eil_layer"])) if len(eil) else num_layers // 2
        for r in rnd[
            (rnd["layer"] == mid) & (rnd["filter"] == "all") & (rnd["label_col"] == "alice_label")
        ].itertuples(index=False):
            random_out.setdefault(train_tag(r.train, r.train_label), {})[r.test] = {
                "layer": mid,
                "mean_auroc": _num(r.auroc),
                "q025": _num(r.auroc_lo),
                "q975": _num(r.auroc_hi),
            }
    return {
        "eil": eil_out,
        "pgr": pgr_out,
        "lm": lm_out,
        "random": random_out,
        "experiments": {m: [str(e) for e in exps] for m, exps in grid.items()},
        "notes": compact_notes(results),
    }


def compact_notes(results: pd.DataFrame) -> list[str]:
    """Every note of the results, with the many "<label> has a single class on <test>/<filter>" notes (recognised
    by their row: the sentence `single_class_note` writes for its label column, test and filter) merged into one
    line per filter."""
    groups: dict[str, tuple[set[str], set[str]]] = {}
    other: set[str] = set()
    noted = results.loc[results["note"].map(bool), ["note", "label_col", "test", "filter"]].drop_duplicates()
    for note, col, test, filt in noted.itertuples(index=False, name=None):
        if note == single_class_note(col, test, filt):
            cols, tests = groups.setdefault(filt, (set(), set()))
            cols.add(col)
            tests.add(test)
        else:
            other.add(note)
    out = sorted(other)
    for filt, (cols, tests) in sorted(groups.items()):
        out.append(
            f"single-class labels ({', '.join(sorted(cols))}) on the {filt!r} examples of "
            f"{', '.join(sorted(tests))}: AUROC undefined there (NaN)"
        )
    return out
