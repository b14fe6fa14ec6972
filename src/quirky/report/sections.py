"""One builder per report section: read a stage's outputs from the run directory, return a `Section` (what the
reader sees) and a JSON-safe dict (what goes into summary.json).

Every builder tolerates a missing stage (the section says "not run" and why) and several models/datasets.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

import quirky
from quirky.anomaly.output import AnomalyOutput
from quirky.errors import QuirkyError
from quirky.experiments.probe_run import EIL_CSV, PGR_CSV, ProbeRun
from quirky.fileio import read_json
from quirky.finetune.output import FinetuneOutput
from quirky.interventions.output import InterventionOutput
from quirky.report import figures
from quirky.report.document import Code, Figure, Paragraph, Section, Table
from quirky.rundir import RunLayout
from quirky.scoring import auroc
from quirky.subsets import EASY, HARD, SUBSET_NAMES, select_mask

SUBSETS = tuple(SUBSET_NAMES)  # the persona subsets (every subset but `all`)

SectionResult = tuple[Section, dict[str, Any]]


def clean_json(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively, so summary.json is valid JSON."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _missing(section_id: str, title: str, why: str) -> SectionResult:
    return Section(section_id, title, present=False, note=why), {"present": False, "note": why}


def _label(model: str, dataset: str, several_models: bool, several_datasets: bool) -> str:
    parts = ([model] if several_models else []) + ([dataset] if several_datasets else [])
    return " / ".join(parts) or dataset


# --------------------------------------------------------------------------------------------------- appendix
def appendix(run: RunLayout) -> SectionResult:
    """The run's config, software versions and fingerprints (run.json), and what stages are present: the
    provenance a reader needs to reproduce the numbers, placed last so the results come first."""
    sec = Section("appendix", "Appendix: configuration, versions and fingerprints")
    data: dict[str, Any] = {"present": True}
    stages = pd.DataFrame(
        [
            ("datasets", len(run.datasets)),
            ("finetuning runs", len(run.finetune)),
            ("activation stores", len(run.activations)),
            ("probe runs", len(run.probes)),
            ("anomaly runs", len(run.anomaly)),
            ("intervention runs", len(run.interventions)),
        ],
        columns=["stage", "outputs found"],
    )
    sec.blocks.append(Table(stages, "Stages found in the run directory"))
    data["stages"] = dict(stages.itertuples(index=False, name=None))
    data["models"] = run.models()
    data["datasets"] = run.dataset_names()
    info: dict[str, Any] = {}
    if run.run_json.is_file():
        info = read_json(run.run_json)
    else:
        sec.note = f"no {run.run_json.name}: the run's config, versions and fingerprints are unknown"
    versions = dict(info.get("versions") or {})
    versions.setdefault("quirky (report)", quirky.__version__)
    versions.setdefault("python (report)", platform.python_version())
    sec.blocks.append(
        Table(pd.DataFrame(sorted(versions.items()), columns=["package", "version"]), "Versions")
    )
    fps = info.get("fingerprints") or {}
    if fps:
        sec.blocks.append(
            Table(
                pd.DataFrame(sorted(fps.items()), columns=["stage", "fingerprint"]),
                "Fingerprints (cache keys)",
            )
        )
    if "config" in info:
        sec.blocks.append(Paragraph("Configuration of the run:"))
        sec.blocks.append(Code(json.dumps(info["config"], indent=2, sort_keys=True, default=str)))
    data.update({"config": info.get("config"), "versions": versions, "fingerprints": fps})
    for key in ("started", "finished"):
        if key in info:
            data[key] = info[key]
    return sec, data


# --------------------------------------------------------------------------------------------------- datasets
def _cutoff(q: float) -> str:
    return f"{q:.2f}".removeprefix("0")  # 0.25 -> ".25"


def _split_counts(df: pd.DataFrame) -> dict[str, Any]:
    """Records, personas, difficulty quartiles (`quirky.subsets`' cutoffs) and label balance of one split."""
    alice = select_mask(df, "Alice")
    return {
        "records": len(df),
        "Alice": int(alice.sum()),
        "Bob": int((~alice).sum()),
        f"easy (q≤{_cutoff(EASY)})": int(select_mask(df, difficulty="easy").sum()),
        f"hard (q≥{_cutoff(HARD)})": int(select_mask(df, difficulty="hard").sum()),
        "Alice label true": float(df["alice_label"].mean()),
        "Alice≠Bob": float((df["alice_label"] != df["bob_label"]).mean()),
    }


def datasets(run: RunLayout, n_examples: int = 2) -> SectionResult:
    """Split sizes, the Alice x Bob label crosstab, persona/difficulty counts and example prompts."""
    if not run.datasets:
        return _missing("datasets", "Datasets", "no datasets/ in the run directory")
    from quirky.datasets import SPLITS, load_split, read_meta, templatize

    sec = Section("datasets", "Datasets")
    data: dict[str, Any] = {"present": True, "datasets": {}}
    size_rows, cross_rows = [], []
    for name, path in run.datasets.items():
        meta = read_meta(path)
        entry: dict[str, Any] = {"fingerprint": meta.get("fingerprint"), "options": meta.get("options")}
        frames = {s: load_split(path, s) for s in SPLITS if (path / f"{s}.parquet").is_file()}
        for split, df in frames.items():
            size_rows.append({"dataset": name, "split": split, **_split_counts(df)})
        if frames:
            every = pd.concat(frames.values(), ignore_index=True)
            for a in (True, False):
                for b in (True, False):
                    cross_rows.append(
                        {
                            "dataset": name,
                            "Alice label": str(a),
                            "Bob label": str(b),
                            "records": int(((every["alice_label"] == a) & (every["bob_label"] == b)).sum()),
                            "fraction": float(
                                ((every["alice_label"] == a) & (every["bob_label"] == b)).mean()
                            ),
                        }
                    )
            split = "test" if "test" in frames else next(iter(frames))
            df = frames[split]
            picks = pd.concat(
                [df[df["character"] == c].head(n_examples) for c in ("Alice", "Bob")], ignore_index=True
            )
            try:
                templated = templatize(picks, str(meta.get("name", name)), setup="single")
                examples = [
                    f"[{r.character}, Alice label {bool(r.alice_label)}, Bob label {bool(r.bob_label)}, "
                    f"difficulty q={r.difficulty_quantile:.2f}] {r.statement!r} -> choices {list(r.choices)!r}"
                    for r in templated.itertuples()
                ]
            except QuirkyError as e:
                examples = [f"(could not templatize: {e})"]
            entry["examples"] = examples
            sec.blocks.append(Paragraph(f"Example prompts of {name} ({split} split, setup 'single'):"))
            sec.blocks.append(Code("\n".join(examples)))
        data["datasets"][name] = entry
    sizes = pd.DataFrame(size_rows)
    cross = pd.DataFrame(cross_rows)
    sec.blocks.insert(0, Table(sizes, "Split sizes, personas, difficulty quartiles and label balance"))
    if not cross.empty:
        sec.blocks.insert(1, Table(cross, "Alice x Bob label crosstab (all splits)"))
    data["sizes"] = sizes.to_dict(orient="records")
    data["crosstab"] = cross.to_dict(orient="records")
    return sec, data


# --------------------------------------------------------------------------------------------------- finetune
def finetuning(run: RunLayout) -> SectionResult:
    """Training curves and final evaluation metrics of every finetuning run (metrics.json)."""
    runs = {k: FinetuneOutput.open(p) for k, p in run.finetune.items() if FinetuneOutput.has_metrics(p)}
    if not runs:
        why = "no finetune/<model>__<dataset>/metrics.json in the run directory"
        if run.finetune:
            why = "finetuning directories exist but none holds metrics.json (unfinished runs?)"
        return _missing("finetuning", "Finetuning", why)
    sec = Section("finetuning", "Finetuning")
    histories: dict[str, pd.DataFrame] = {}
    finals = []
    for (model, dataset), output in sorted(runs.items()):
        m = output.metrics or {}
        h = pd.DataFrame(m.get("history") or [])
        if h.empty or "step" not in h:
            continue
        name = f"{model} / {dataset}"
        histories[name] = h.apply(pd.to_numeric, errors="coerce")
        final = dict(m.get("final") or h.iloc[-1].to_dict())
        finals.append({"model": model, "dataset": dataset, **{k: final.get(k) for k in _FINAL_KEYS}})
    if not histories:
        return _missing("finetuning", "Finetuning", "the finetuning metrics hold no evaluation history")
    sec.blocks.append(
        Figure(
            "finetune_curves",
            figures.finetune_curves(histories),
            "Finetuning: training and evaluation loss (left) and the AUROC of the LM's answer log-odds on the "
            "evaluation split (right): Alice prompts vs Alice's labels, Bob prompts vs Bob's labels, and Bob "
            "prompts vs the truth (Alice's labels).",
        )
    )
    table = pd.DataFrame(finals)
    sec.blocks.append(Table(table, "Final evaluation metrics"))
    return sec, {"present": True, "final": table.to_dict(orient="records")}


_FINAL_KEYS = ("step", "loss", "alice_acc", "alice_auroc", "bob_acc", "bob_auroc", "bob_vs_truth_auroc")


# --------------------------------------------------------------------------------------------------- LM accuracy
def _lm_result_rows(run: RunLayout) -> pd.DataFrame:
    """The probe stage's rows for the LM's own log-odds (method `lm`: AUROC and accuracy with bootstrap CIs per
    test subset), from results.parquet (in a results archive, its trimmed copy)."""
    results = probe_results(run)
    return results[results["method"] == "lm"] if not results.empty else results


def _with_ci(value: float, lo: float, hi: float) -> str:
    if not np.isfinite(value):
        return "–"
    ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{value:.3f}{ci}"


def _lm_ci_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, persona x difficulty subset): the LM's accuracy and AUROC against the persona's own
    label and against the truth (Alice's label), all examples, with the probe stage's 95% bootstrap CIs."""
    out = []
    sel = rows[rows["filter"] == "all"]
    for (model, dataset), g in sel.groupby(["model", "dataset"], sort=True):
        for subset in SUBSETS:
            part = g[g["test"] == subset].set_index("label_col")
            if "label" not in part.index:
                continue
            own = part.loc["label"]
            truth = part.loc["alice_label"] if "alice_label" in part.index else None
            out.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "subset": subset,
                    "n": int(own["n"]),
                    "accuracy": float(own["acc"]),
                    "accuracy_lo": float(own["acc_lo"]),
                    "accuracy_hi": float(own["acc_hi"]),
                    "auroc_persona": float(own["auroc"]),
                    "auroc_persona_lo": float(own["auroc_lo"]),
                    "auroc_persona_hi": float(own["auroc_hi"]),
                    "auroc_truth": float(truth["auroc"]) if truth is not None else math.nan,
                    "auroc_truth_lo": float(truth["auroc_lo"]) if truth is not None else math.nan,
                    "auroc_truth_hi": float(truth["auroc_hi"]) if truth is not None else math.nan,
                }
            )
    return pd.DataFrame(out)


def _lm_ci_display(table: pd.DataFrame) -> pd.DataFrame:
    def fmt(prefix: str) -> list[str]:
        return [
            _with_ci(v, lo, hi)
            for v, lo, hi in zip(table[prefix], table[f"{prefix}_lo"], table[f"{prefix}_hi"], strict=True)
        ]

    return pd.DataFrame(
        {
            "model": table["model"],
            "dataset": table["dataset"],
            "subset": table["subset"].map(SUBSET_NAMES),
            "n": table["n"],
            "accuracy [95% CI]": fmt("accuracy"),
            "AUROC vs persona's label [95% CI]": fmt("auroc_persona"),
            "AUROC vs truth [95% CI]": fmt("auroc_truth"),
        }
    )


def lm_accuracy(run: RunLayout, split: str = "test") -> SectionResult:
    """Accuracy and AUROC of the LM's own answer (first-token log-odds) per persona and difficulty: recomputed
    from the test store when it is there, and with the probe stage's bootstrap CIs when its results are (a results
    archive has no activations, only the latter)."""
    stores = {(m, d): p for (m, d, s), p in run.activations.items() if s == split}
    ci_rows = _lm_result_rows(run)
    if not stores and ci_rows.empty:
        return _missing(
            "lm",
            "LM accuracy by persona and difficulty",
            f"no activations/<model>/<dataset>/{split}/ store and no probe results",
        )
    sec = Section("lm", "LM accuracy by persona and difficulty")
    data: dict[str, Any] = {"present": True, "split": split}
    ci = _lm_ci_table(ci_rows) if not ci_rows.empty else pd.DataFrame()
    if not stores:
        several = ci["model"].nunique() > 1, ci["dataset"].nunique() > 1
        runs = [_label(m, d, *several) for m, d in zip(ci["model"], ci["dataset"], strict=True)]
        sec.blocks.append(
            Figure(
                "lm_auroc",
                figures.grouped_bars(
                    ci.assign(
                        run=runs, subset=ci["subset"].map(lambda s: SUBSET_NAMES[s].replace(", ", "\n"))
                    ),
                    group="subset",
                    series="run",
                    y="auroc_persona",
                    lo="auroc_persona_lo",
                    hi="auroc_persona_hi",
                    ylabel="AUROC (vs the persona's label)",
                    title=f"LM answer AUROC on the {split} split",
                ),
                "AUROC of the LM's answer log-odds against the label of the persona in the prompt, by persona and "
                "difficulty quartile, with 95% bootstrap CIs (from the probe stage's results).",
            )
        )
    else:
        from quirky.extraction.store import open_store

        several_m = len({m for m, _ in stores}) > 1
        several_d = len({d for _, d in stores}) > 1
        rows = []
        for (model, dataset), path in sorted(stores.items()):
            store = open_store(path)
            lo = store.lm_log_odds().numpy()
            meta = store.meta
            for subset in SUBSETS:
                mask = store.mask(subset)
                own = meta["label"].to_numpy()[mask]
                alice = meta["alice_label"].to_numpy()[mask]
                s = lo[mask]
                rows.append(
                    {
                        "run": _label(model, dataset, several_m, several_d),
                        "model": model,
                        "dataset": dataset,
                        "subset": subset,
                        "n": int(mask.sum()),
                        "accuracy": float(np.mean((s > 0) == (own == 1))) if mask.any() else math.nan,
                        "AUROC (persona label)": auroc(s, own),
                        "AUROC (truth)": auroc(s, alice),
                    }
                )
        table = pd.DataFrame(rows)
        sec.blocks.append(
            Figure(
                "lm_accuracy",
                figures.grouped_bars(
                    table.assign(subset=table["subset"].map(lambda s: SUBSET_NAMES[s].replace(", ", "\n"))),
                    group="subset",
                    series="run",
                    y="accuracy",
                    ylabel="accuracy (vs the persona's label)",
                    title=f"LM answer accuracy on the {split} split",
                ),
                "Accuracy of the LM's answer (first-token log-odds > 0) against the label of the persona in the "
                f"prompt, by persona and difficulty quartile (easy: difficulty quantile ≤ {EASY:g}, hard: ≥ {HARD:g}).",
            )
        )
        sec.blocks.append(Table(table.drop(columns=["run"]), "LM accuracy and AUROC per subset"))
        data["rows"] = table.drop(columns=["run"]).to_dict(orient="records")
    if not ci.empty:
        sec.blocks.append(
            Table(
                _lm_ci_display(ci),
                "LM accuracy and AUROC per persona and difficulty, all examples, with the probe stage's 95% "
                "bootstrap CIs (truth = Alice's label).",
            )
        )
        data["with_ci"] = ci.to_dict(orient="records")
    return sec, data


# --------------------------------------------------------------------------------------------------- probes
#: (panel title, train tag, test subset): the transfers drawn as AUROC-vs-layer curves, all against Alice's labels
CURVE_PANELS: tuple[tuple[str, str, str], ...] = (
    ("A → A (in distribution)", "A", "A"),
    ("A → B (Alice → Bob)", "A", "B"),
    ("AE → AH (easy → hard)", "AE", "AH"),
    ("AE → BH (easy Alice → hard Bob)", "AE", "BH"),
)
GRID_POINTS = 101


def probe_results(run: RunLayout) -> pd.DataFrame:
    """Every probe run's results.parquet, with model/dataset named by their place in the run directory (read
    once per report: several sections use it)."""
    if "probe_results" in run.cache:
        return run.cache["probe_results"]
    frames = []
    for (model, dataset), path in sorted(run.probes.items()):
        results = ProbeRun(path).results()
        if results is not None:
            frames.append(results.assign(model=model, dataset=dataset))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    run.cache["probe_results"] = out
    return out


def probe_tables(run: RunLayout) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(EIL rows, PGR rows) of every probe run, recomputed from `results.parquet` (the CSVs round to 6 digits),
    else read from `eil.csv` / `pgr.csv`.  Cached on `run`: the summary and the transfer section share them."""
    if "probe_tables" in run.cache:
        return run.cache["probe_tables"]
    from quirky.experiments.pgr import DEFAULT_PGR_SPECS
    from quirky.experiments.summary import eil_table, pgr_table

    eils, pgrs = [], []
    for (model, dataset), path in sorted(run.probes.items()):
        probe_run = ProbeRun(path)
        results = probe_run.results()
        if results is not None:
            layers = int(results.loc[results["layer"] >= 0, "layer"].max()) + 1
            eil = eil_table(results, layers)
            eils.append(eil.assign(model=model, dataset=dataset))
            pgrs.append(
                pgr_table(results, eil, DEFAULT_PGR_SPECS, layers).assign(model=model, dataset=dataset)
            )
        else:
            for name, found in ((EIL_CSV, eils), (PGR_CSV, pgrs)):
                table = probe_run.table(name)
                if table is not None:
                    found.append(table.assign(model=model, dataset=dataset))
    eils = [e for e in eils if len(e)]
    pgrs = [g for g in pgrs if len(g)]
    out = (
        pd.concat(eils, ignore_index=True) if eils else pd.DataFrame(),
        pd.concat(pgrs, ignore_index=True) if pgrs else pd.DataFrame(),
    )
    run.cache["probe_tables"] = out
    return out


def _num_layers(results: pd.DataFrame) -> dict[tuple[str, str], int]:
    probes = results[results["layer"] >= 0]
    return {k: int(g["layer"].max()) + 1 for k, g in probes.groupby(["model", "dataset"])}


def _interpolate(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear interpolation of y(x) at `grid`; NaN outside [x0, x_end] and on any segment touching a NaN layer
    (a missing value is not invented from its neighbours)."""
    out = np.full(len(grid), np.nan)
    j = np.clip(np.searchsorted(x, grid, side="right") - 1, 0, len(x) - 1)
    exact = np.isclose(grid, x[j])
    out[exact] = y[j[exact]]
    inner = ~exact & (grid > x[0]) & (grid < x[-1])
    k = j[inner]
    w = (grid[inner] - x[k]) / (x[k + 1] - x[k])
    out[inner] = (1 - w) * y[k] + w * y[k + 1]  # NaN if either end is NaN
    return out


def _curves(results: pd.DataFrame, label_col: str, filt: str) -> pd.DataFrame:
    """Long table panel/series/x/y/lo/hi of probe AUROC against layer fraction, one panel per CURVE_PANELS entry.

    One (model, dataset): the bootstrap CI of each layer as the band.  Several: each run's curve is interpolated
    on GRID_POINTS points of depth (x = (layer+1)/L, as the reference), never across a NaN layer, and averaged
    over the runs that have a value at that point (the original's `elk_generalization/results/viz.py` divided by
    all runs, counting a NaN run as zero); the band is ±1.96 standard errors across runs.
    """
    layers = _num_layers(results)
    sel = results[(results["label_col"] == label_col) & (results["filter"] == filt) & (results["layer"] >= 0)]
    sel = sel[~sel["method"].isin(["random", "lm"])]
    sel = sel[sel["train_label"] == "label"]
    rows = []
    several = len(layers) > 1
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
    for title, train, test in CURVE_PANELS:
        part = sel[(sel["train"] == train) & (sel["test"] == test)]
        for method, g in part.groupby("method", sort=False):
            if not several:
                g = g.sort_values("layer")
                (key,) = {(m, d) for m, d in zip(g["model"], g["dataset"], strict=True)}
                x = (g["layer"].to_numpy() + 1) / layers[key]
                for xi, r in zip(x, g.itertuples(index=False), strict=True):
                    rows.append(
                        {
                            "panel": title,
                            "series": method,
                            "x": xi,
                            "y": r.auroc,
                            "lo": r.auroc_lo,
                            "hi": r.auroc_hi,
                        }
                    )
                continue
            curves = []
            for key, h in g.groupby(["model", "dataset"]):
                h = h.sort_values("layer")
                x = (h["layer"].to_numpy() + 1) / layers[key]
                curves.append(_interpolate(grid, x, h["auroc"].to_numpy(dtype=float)))
            if not curves:
                continue
            stack = np.vstack(curves)
            count = np.isfinite(stack).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.nansum(stack, axis=0) / np.where(count > 0, count, np.nan)
                sd = np.sqrt(np.nansum((stack - mean) ** 2, axis=0) / np.where(count > 1, count - 1, np.nan))
                se = sd / np.sqrt(count)
            for xi, m, s in zip(grid, mean, se, strict=True):
                rows.append(
                    {
                        "panel": title,
                        "series": method,
                        "x": xi,
                        "y": m,
                        "lo": m - 1.96 * s,
                        "hi": m + 1.96 * s,
                    }
                )
    return pd.DataFrame(rows, columns=["panel", "series", "x", "y", "lo", "hi"])


def _lm_references(results: pd.DataFrame, label_col: str, filt: str) -> dict[str, list[tuple[str, float]]]:
    """The LM's own AUROC (its answer log-odds) on each panel's test subset, averaged over runs."""
    lm = results[
        (results["method"] == "lm") & (results["label_col"] == label_col) & (results["filter"] == filt)
    ]
    refs: dict[str, list[tuple[str, float]]] = {}
    for title, _, test in CURVE_PANELS:
        vals = lm.loc[lm["test"] == test, "auroc"].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            refs[title] = [("LM's own answer on the test subset", float(vals.mean()))]
    return refs


_VIEWS = {"all": "all examples", "disagree": "examples where Alice and Bob disagree"}


def _layer_curves_png(
    curves: pd.DataFrame, references: dict[str, list[tuple[str, float]]] | None = None, max_cols: int = 3
) -> bytes:
    """AUROC against Alice's labels by depth, one panel per `panel` of a `_curves`-shaped frame."""
    return figures.line_panels(
        curves,
        panel="panel",
        series="series",
        x="x",
        y="y",
        lo="lo",
        hi="hi",
        references=references,
        xlabel="layer (fraction of depth)",
        ylabel="AUROC vs Alice's labels",
        max_cols=max_cols,
    )


def probe_curve_figure(results: pd.DataFrame, filt: str) -> Figure | None:
    """Probe AUROC against Alice's labels by layer for the CURVE_PANELS transfers, on one example filter; None
    when the results hold no such curves.  The summary shows the `all` view, the probe section the others."""
    curves = _curves(results, "alice_label", filt)
    if curves.empty:
        return None
    n_runs = len({(m, d) for m, d in zip(results["model"], results["dataset"], strict=True)})
    how = (
        f"averaged over {n_runs} (model, dataset) runs on a common depth axis, band ±1.96 SE across runs"
        if n_runs > 1
        else "shaded: 95% bootstrap CI"
    )
    return Figure(
        f"probe_auroc_layers_{filt}",
        _layer_curves_png(curves, _lm_references(results, "alice_label", filt), max_cols=2),
        f"Probe AUROC against Alice's (true) labels by layer, {_VIEWS.get(filt, filt)} ({how}). Each panel trains "
        "on the first subset and tests on the second; dashed: the LM's own answer AUROC on the test subset.",
    )


def _per_dataset_curves(results: pd.DataFrame) -> pd.DataFrame:
    """The AE→BH curves of each dataset (averaged over models when there are several), one panel per dataset."""
    title = next(t for t, train, test in CURVE_PANELS if (train, test) == ("AE", "BH"))
    frames = []
    for dataset, g in results.groupby("dataset", sort=True):
        c = _curves(g, "alice_label", "all")
        frames.append(c[c["panel"] == title].assign(panel=str(dataset)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def probe_curves(run: RunLayout) -> SectionResult:
    """AUROC against Alice's labels per layer and method: the disagreement view of the summary's curves and, for
    several datasets, the easy Alice → hard Bob curve of each dataset."""
    results = probe_results(run)
    if results.empty:
        return _missing("probes", "Probe AUROC by layer", "no probes/<model>/<dataset>/results.parquet")
    sec = Section("probes", "Probe AUROC by layer")
    runs = sorted({(m, d) for m, d in zip(results["model"], results["dataset"], strict=True)})
    data: dict[str, Any] = {"present": True, "runs": [f"{m}/{d}" for m, d in runs], "figures": []}
    sec.blocks.append(
        Paragraph(
            "The same curves on all examples are in the summary (figure 'Probe AUROC ... all examples')."
        )
    )
    if (results["filter"] == "disagree").any():
        fig = probe_curve_figure(results, "disagree")
        if fig is not None:
            sec.blocks.append(fig)
            data["figures"].append(fig.name)
    if results["dataset"].nunique() > 1:
        curves = _per_dataset_curves(results)
        if not curves.empty:
            name = "probe_auroc_layers_by_dataset"
            sec.blocks.append(
                Figure(
                    name,
                    _layer_curves_png(curves),
                    "Per dataset: AUROC against Alice's (true) labels on Bob's hard examples of probes trained on "
                    "Alice's easy examples (AE→BH), by layer (averaged over models when there are several).",
                )
            )
            data["figures"].append(name)
    if len(runs) > 1:
        sec.blocks.append(Paragraph("Runs: " + ", ".join(f"{m} / {d}" for m, d in runs)))
    return sec, data


def transfer_table(run: RunLayout) -> SectionResult:
    """The AUROC behind each PGR (method x dataset) and the EIL of every probe; the PGR tables themselves open
    the report (summary)."""
    eil, pgrs = probe_tables(run)
    if eil.empty and pgrs.empty:
        return _missing("transfer", "Transfer: EIL and AUROC", "no probes/<model>/<dataset>/results.parquet")
    sec = Section("transfer", "Transfer: EIL and AUROC")
    data: dict[str, Any] = {"present": True}
    sec.blocks.append(
        Paragraph(
            "The AUROC against Alice's labels from which the summary's PGR tables are computed, read at each "
            "probe's earliest informative layer (EIL: the first layer whose AUROC above 0.5 reaches 95% of the "
            "best layer's, on the probe's own training distribution), averaged over models."
        )
    )
    if not pgrs.empty:
        auc_tables: dict[str, Any] = {}
        for name, g in pgrs.groupby("table", sort=False):
            auc = g.pivot_table(index=["method", "train"], columns="dataset", values="auc", dropna=False)
            sec.blocks.append(Table(auc.reset_index(), f"AUROC at the EIL, {name}", digits=3))
            auc_tables[str(name)] = g.to_dict(orient="records")
        data["auroc"] = auc_tables
    if not eil.empty:
        eil = eil[
            ["model", "dataset", "method", "train", "train_label", "eil_layer", "eil_fraction", "eil_auroc"]
        ]
        sec.blocks.append(
            Table(eil, "Earliest informative layer (EIL) of every probe and its in-distribution AUROC")
        )
        data["eil"] = eil.to_dict(orient="records")
    return sec, data


# --------------------------------------------------------------------------------------------------- anomaly
ANOMALY_NOTE = (
    "Detectors are fitted on trusted data only (Alice-easy test examples) and must tell Alice-hard "
    "(normal) from Bob-hard (anomalous) examples. AUROC with the anomalous class positive; recall at a "
    "false-positive rate measured on the normal test examples."
)


def anomaly(run: RunLayout) -> SectionResult:
    """AUROC (with CI) and recall at low false-positive rates of every detector, and score distributions."""
    if not run.anomaly:
        return _missing(
            "anomaly", "Mechanistic anomaly detection", "no anomaly/<model>/<dataset>/anomaly.json"
        )
    sec = Section("anomaly", "Mechanistic anomaly detection")
    table, excluded, skipped, score_frames = _anomaly_results(run)
    if table.empty:
        return _missing("anomaly", "Mechanistic anomaly detection", "the anomaly results are empty")
    several_models = table["model"].nunique() > 1
    kept = table[~table["excluded"]]
    sec.blocks.append(Paragraph(ANOMALY_NOTE))
    if not kept.empty:
        sec.blocks.append(_anomaly_auroc_figure(kept, several_models))
    summary = _mean_anomaly_auroc(kept)
    if table["dataset"].nunique() > 1 or several_models:
        sec.blocks.append(Table(summary, "Mean anomaly AUROC over datasets and models (exclusions left out)"))
    sec.blocks.append(Table(table, "Anomaly detection results"))
    if excluded:
        sec.blocks.append(
            Paragraph("Left out of the averages (still listed above): " + "; ".join(sorted(set(excluded))))
        )
    if skipped:
        sec.blocks.append(
            Paragraph(
                "Not run (no probe was fitted on the trusted Alice-easy subset): "
                + "; ".join(sorted(skipped))
            )
        )
    histograms = _anomaly_score_figure(score_frames, several_models)
    if histograms is not None:
        sec.blocks.append(histograms)
    return sec, {
        "present": True,
        "results": table.to_dict(orient="records"),
        "mean_auroc": summary.to_dict(orient="records"),
        "excluded": sorted(set(excluded)),
    }


def _anomaly_results(run: RunLayout) -> tuple[pd.DataFrame, list[str], list[str], list[pd.DataFrame]]:
    """Every (model, dataset) anomaly output flattened for the reader: one table row per detector result (AUROC,
    CI, recall at 1% and 5% FPR, counts), the exclusions and skipped methods as sentences, and the score frames
    tagged with their model and dataset (the stage's files do not repeat them per example)."""
    rows, excluded, skipped, score_frames = [], [], [], []
    for (model, dataset), path in sorted(run.anomaly.items()):
        output = AnomalyOutput.open(path)
        skipped += [f"{model}/{dataset} {s['method']}: {s['reason']}" for s in output.skipped]
        for r in output.results:
            rows.append(_anomaly_row(model, dataset, r))
            if r.get("excluded"):
                excluded.append(f"{model}/{dataset}: {r.get('exclusion_reason')}")
        sf = output.scores()
        if sf is not None:
            score_frames.append(sf.assign(model=model, dataset=dataset))
    table = pd.DataFrame(rows)
    if not table.empty:
        # a missing value (None) becomes NaN, so the columns format and plot as numbers
        table = table.astype(
            {c: float for c in ("AUROC", "CI low", "CI high", "recall@1%FPR", "recall@5%FPR")}
        )
    return table, excluded, skipped, score_frames


def _anomaly_row(model: str, dataset: str, r: dict[str, Any]) -> dict[str, Any]:
    """One detector result as a table row; a result without a CI or recall (an old or partial file) gets None."""
    ci = r.get("auroc_ci") or [None, None]
    recall = r.get("recall_at_fpr") or {}
    return {
        "model": model,
        "dataset": dataset,
        "method": r.get("method"),
        "detector": r.get("detector"),
        "AUROC": r.get("auroc"),
        "CI low": ci[0],
        "CI high": ci[1],
        "recall@1%FPR": recall.get("0.01"),
        "recall@5%FPR": recall.get("0.05"),
        "n normal": r.get("n_normal"),
        "n anomalous": r.get("n_anomalous"),
        "excluded": bool(r.get("excluded")),
    }


def _anomaly_auroc_figure(kept: pd.DataFrame, several_models: bool) -> Figure:
    """AUROC with its CI per detector / features, one panel per dataset (and model, when there are several): the
    spread of the CIs shows at a glance which differences between detectors are real."""
    plot = kept.assign(
        config=kept["detector"] + " / " + kept["method"],
        where=kept["dataset"] + ((" / " + kept["model"]) if several_models else ""),
    )
    return Figure(
        "anomaly_auroc",
        figures.dot_ci(
            plot,
            panel="where",
            label="config",
            value="AUROC",
            lo="CI low",
            hi="CI high",
            xlabel="AUROC, Bob-hard vs Alice-hard",
        ),
        "Anomaly detection AUROC (dot) with its 95% bootstrap CI (line), one row per detector / features "
        "(the probe method whose AE-trained per-layer scores are used, or raw hidden states), one panel "
        "per dataset.",
    )


def _mean_anomaly_auroc(kept: pd.DataFrame) -> pd.DataFrame:
    """Mean AUROC per (detector, method) over the non-excluded (model, dataset) results, and how many there are."""
    return (
        kept.groupby(["detector", "method"], sort=True)["AUROC"]
        .agg(["mean", "count"])
        .reset_index()
        .rename(columns={"mean": "mean AUROC", "count": "datasets x models"})
    )


def _anomaly_score_figure(score_frames: list[pd.DataFrame], several_models: bool) -> Figure | None:
    """Histograms of the reference (gaussian) detector's scores on Alice-hard vs Bob-hard examples, per dataset
    and method: an AUROC says how well the classes separate, the histograms show how (a shift, a tail, overlap).
    None when no output has scores for that detector."""
    if not score_frames:
        return None
    scores = pd.concat(score_frames, ignore_index=True)
    ref = scores[(scores["detector"] == "gaussian") & scores["subset"].isin(["AH", "BH"])]
    if ref.empty:
        return None
    ref = ref.assign(
        panel=ref["dataset"] + " / " + ref["method"] + ((" / " + ref["model"]) if several_models else ""),
        subset=ref["subset"].map({"AH": "Alice hard (normal)", "BH": "Bob hard (anomalous)"}),
    )
    return Figure(
        "anomaly_scores",
        figures.score_histograms(
            ref,
            panel="panel",
            group="subset",
            value="score",
            xlabel="anomaly score (−log density)",
        ),
        "Distribution of the reference detector's anomaly score (negative Gaussian log-density of the "
        "per-layer probe scores) on Alice-hard and Bob-hard test examples.",
    )


# --------------------------------------------------------------------------------------------------- interventions
def interventions(run: RunLayout) -> SectionResult:
    """The LM's AUROC against Alice's and Bob's labels after reflecting the probe direction, per layer."""
    if not run.interventions:
        return _missing(
            "interventions",
            "Interventions",
            "no interventions/<model>/<dataset>/<method>__<train>/interventions.json",
        )
    sec = Section("interventions", "Interventions")
    rows, refs, summary = [], {}, []
    depth_known = True  # every run records its layer count: plot layers as a fraction of depth
    for (model, dataset, name), path in sorted(run.interventions.items()):
        output = InterventionOutput.open(path)
        cfg = output.config
        total = cfg.get("num_layers")
        depth_known = depth_known and bool(total)
        desc = name
        if cfg.get("method") and cfg.get("train_subset"):
            desc = f"{cfg['method']} probe on {cfg['train_subset']}, tested on {cfg.get('test_subset', '?')}"
        panel = f"{dataset}: {desc}" + (f" ({model})" if len(run.models()) > 1 else "")
        clean = output.clean
        refs[panel] = [
            ("clean, vs Alice", clean.get("auroc_alice"), "intervened, vs Alice"),
            ("clean, vs Bob", clean.get("auroc_bob"), "intervened, vs Bob"),
        ]
        for r in output.layers:
            x = (r["layer"] + 1) / total if total else r["layer"]
            for who in ("alice", "bob"):
                rows.append(
                    {
                        "panel": panel,
                        "series": f"intervened, vs {who.capitalize()}",
                        "x": x,
                        "y": r.get(f"auroc_{who}"),
                    }
                )
            summary.append({"model": model, "dataset": dataset, "run": name, **r})
    frame = pd.DataFrame(rows).astype({"y": float})
    xlabel = "layer (fraction of depth)" if depth_known else "layer"
    sec.blocks.append(
        Paragraph(
            "At one layer at a time, the last prompt token's residual state is reflected across the probe's "
            "direction through its training mean (h' = h − 2((h−μ)·u)u); the rest of the model runs unchanged. "
            "If the model's answer reads the probed direction, the AUROC of its answer against the labels it "
            "used falls below 0.5."
        )
    )
    sec.blocks.append(
        Figure(
            "interventions",
            figures.line_panels(
                frame,
                panel="panel",
                series="series",
                x="x",
                y="y",
                references=refs,
                xlabel=xlabel,
                ylabel="AUROC of LM log-odds",
                ylim=(0.0, 1.02),
            ),
            "AUROC of the LM's answer log-odds against Alice's and Bob's labels after the reflection at each layer "
            "(solid) and without intervention (dashed/dotted).",
        )
    )
    table = pd.DataFrame(summary)
    sec.blocks.append(Table(table, "Intervention results per layer"))
    return sec, {"present": True, "results": table.to_dict(orient="records")}


def summary(run: RunLayout) -> SectionResult:
    """The results-first summary (`quirky.report.summary`, imported here lazily: it builds on this module)."""
    from quirky.report.summary import summary as build

    return build(run)


#: The report's sections in reading order: results first, then each stage's details, the provenance last.
BUILDERS: list[tuple[str, Callable[[RunLayout], SectionResult]]] = [
    ("summary", summary),
    ("datasets", datasets),
    ("finetuning", finetuning),
    ("lm", lm_accuracy),
    ("probes", probe_curves),
    ("transfer", transfer_table),
    ("anomaly", anomaly),
    ("interventions", interventions),
    ("appendix", appendix),
]
