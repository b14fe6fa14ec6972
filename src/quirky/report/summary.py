"""The report's first section: the results a reader came for, before any detail.

Why a section of its own: a researcher opening a report asks "what did the probes find, and does it match the
paper?".  This section answers with the headline numbers per run, the PGR tables (method x dataset, with each
dataset's floor and ceiling) beside the paper's averages, the anomaly AUROC beside the paper's, and the key figures;
the stage-by-stage details follow, and the configuration goes to the appendix.

Every number here is computed from the run's own files: the probe stage's `results.parquet` (EIL and PGR are
recomputed from it at full precision, as the transfer section does), its `summary.json` (LM AUROCs) and
`anomaly.json`.  The paper's numbers come from `quirky.report.paper_numbers` only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from quirky.anomaly.output import AnomalyOutput
from quirky.experiments.probe_run import ProbeRun
from quirky.report import figures
from quirky.report import paper_numbers as paper
from quirky.report.document import Figure, Paragraph, Section, Table
from quirky.report.sections import probe_curve_figure, probe_results, probe_tables
from quirky.rundir import RunLayout

SectionResult = tuple[Section, dict[str, Any]]

PGR_NOTE = (
    "PGR (performance gap recovered) = (AUROC − floor) / (ceiling − floor), all against Alice's (true) labels on "
    "all examples: AUROC of the probe at its earliest informative layer (EIL); floor and ceiling are the "
    "final-layer lr probe trained on Bob's and on Alice's examples (B→BH and A→AH for AE→BH; B→B and A→A for "
    "A→B). 1 = as good as a probe trained on the truth, 0 = no better than one trained on Bob's errors."
)


def method_label(method: str, train: str, own_train: str) -> str:
    """`lr`, or `ccs (all@alice_label)` when a method is trained on another set than the table's own."""
    return method if train == own_train else f"{method} ({train})"


def _excluded(table: str, datasets: set[str]) -> list[str]:
    """The paper leaves population out of every average that involves hard examples."""
    return sorted(d for d in paper.EXCLUDED_WHEN_HARD if "H" in table and d in datasets)


def paper_order(datasets: Any) -> list[str]:
    """Datasets in the paper's table order, unknown names last, alphabetically: our tables line up with the
    paper's columns."""
    rank = {name: i for i, name in enumerate(paper.DATASET_ABBREVIATIONS)}
    return sorted(set(datasets), key=lambda d: (rank.get(d, len(rank)), d))


#: more dataset columns than this and the PGR tables use the paper's short names (a page-wide table otherwise)
MAX_LONG_COLUMNS = 4


def _short_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """The frame with dataset columns renamed to the paper's abbreviations when there are many of them, and the
    names that were abbreviated (for the caption)."""
    names = [c for c in frame.columns if c in paper.DATASET_ABBREVIATIONS]
    if len(names) <= MAX_LONG_COLUMNS:
        return frame, {}
    short = {c: paper.DATASET_ABBREVIATIONS[c] for c in names if paper.DATASET_ABBREVIATIONS[c] != c}
    return frame.rename(columns=short), short


def _fmt_num(x: Any) -> float:
    return math.nan if x is None else float(x)


# ---------------------------------------------------------------------------------------------- headline table
def headline_table(run: RunLayout) -> pd.DataFrame:
    """One row per (model, dataset) probe run: the LM's own AUROCs, the best AE→BH probe, its PGR, anomaly AUROC.

    Read from the stages' own summaries through the same function that prints the demo's headline table, so the
    report and the terminal never disagree."""
    from quirky.pipeline.headlines import headlines

    rows = []
    several_models = len({m for m, _ in run.probes}) > 1
    order = {d: i for i, d in enumerate(paper_order(d for _, d in run.probes))}
    for (model, dataset), path in sorted(run.probes.items(), key=lambda kv: (order[kv[0][1]], kv[0][0])):
        probe_run = ProbeRun(path)
        if not probe_run.finished:
            continue
        job: dict[str, Any] = {"probe_summary": probe_run.summary}
        anomaly_dir = run.anomaly.get((model, dataset))
        if anomaly_dir is not None:
            job["anomaly_summary"] = AnomalyOutput.open(anomaly_dir).summary
        h = headlines(job)
        rows.append(
            {
                **({"model": model} if several_models else {}),
                "dataset": dataset,
                "LM AUROC Alice (vs Alice)": _fmt_num(h["lm_auroc_alice"]),
                "LM AUROC Bob (vs Bob)": _fmt_num(h["lm_auroc_bob"]),
                "LM AUROC Bob (vs truth)": _fmt_num(h["lm_auroc_bob_vs_truth"]),
                "best probe AE→BH": h["best_method"] or "–",
                "its AUROC vs truth": _fmt_num(h["best_auroc"]),
                "its PGR": _fmt_num(h["best_pgr"]),
                "anomaly AUROC": _fmt_num(h["anomaly_auroc"]),
            }
        )
    frame = pd.DataFrame(rows)
    if not run.anomaly and "anomaly AUROC" in frame:
        frame = frame.drop(
            columns=["anomaly AUROC"]
        )  # the stage did not run: a column of dashes says nothing
    return frame


# ---------------------------------------------------------------------------------------------- PGR tables
def pgr_tables(pgr_rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per PGR table: the method x dataset PGR frame (with our average and the paper's), the floor/ceiling frame,
    the averaged rows (for summary.json) and the datasets left out of the average."""
    from quirky.experiments.pgr import average_pgr, pgr

    out: dict[str, dict[str, Any]] = {}
    for name, g in pgr_rows.groupby("table", sort=False):
        name = str(name)
        own_train = "AE" if name == "AE->BH" else "A"
        excluded = _excluded(name, set(g["dataset"]))
        # per-dataset values include every dataset; the "average" row leaves out the excluded ones
        per_ds = average_pgr(g, by=("table", "method", "train"))
        per_ds = per_ds[per_ds["dataset"] != "average"]
        avg = average_pgr(g, by=("table", "method", "train"), exclude_datasets=excluded)
        avg = avg[avg["dataset"] == "average"]
        both = pd.concat([per_ds, avg], ignore_index=True)
        datasets = paper_order(per_ds["dataset"])
        several = len(datasets) > 1
        reference = paper.PGR_TABLES.get(name, {})
        rows = []
        keys = list(dict.fromkeys(zip(both["method"], both["train"], strict=True)))
        for method, train in keys:
            sel = both[(both["method"] == method) & (both["train"] == train)].set_index("dataset")
            row: dict[str, Any] = {"method": method_label(method, train, own_train)}
            for d in datasets:
                row[d] = float(sel["pgr"].get(d, math.nan))
            if several:
                row["average"] = float(sel["pgr"].get("average", math.nan))
            row["paper (average)"] = reference.get((method, train), math.nan)
            rows.append(row)
        # the paper's "method average" row: every (row, dataset) cell weighted equally, ratio of averaged AUROCs
        # (within one dataset the rows share floor and ceiling, so there it is also the mean of the rows' PGRs)
        mean_row: dict[str, Any] = {"method": "method average"}
        for d in [*datasets, *(["average"] if several else [])]:
            cells = (
                per_ds[~per_ds["dataset"].isin(excluded)]
                if d == "average"
                else per_ds[per_ds["dataset"] == d]
            )
            cells = cells.dropna(subset=["auc", "floor", "ceiling"])
            mean_row[d] = (
                pgr(float(cells["auc"].mean()), float(cells["floor"].mean()), float(cells["ceiling"].mean()))
                if len(cells)
                else math.nan
            )
        mean_row["paper (average)"] = paper.AE_BH_METHOD_AVERAGE if name == "AE->BH" else math.nan
        rows.append(mean_row)
        frame = pd.DataFrame(rows)

        fc_rows = []
        paper_fc = paper.AE_BH_FLOOR_CEILING if name == "AE->BH" else {}
        for d in datasets:
            sel = per_ds[per_ds["dataset"] == d].iloc[0]
            pf, pc = paper_fc.get(d, (math.nan, math.nan))
            fc_rows.append(
                {
                    "dataset": d,
                    "floor": float(sel["floor"]),
                    "ceiling": float(sel["ceiling"]),
                    "gap": float(sel["ceiling"] - sel["floor"]),
                    "paper floor": pf,
                    "paper ceiling": pc,
                }
            )
        if several or name in paper.FLOOR_CEILING_AVERAGES:
            # each dataset's (model-averaged) floor and ceiling counted once, whatever its rows' AUROCs
            kept = pd.DataFrame([r for r in fc_rows if r["dataset"] not in excluded])
            floor, ceiling = (
                (float(kept["floor"].mean()), float(kept["ceiling"].mean()))
                if several and len(kept)
                else (math.nan, math.nan)
            )
            pf, pc = paper.FLOOR_CEILING_AVERAGES.get(name, (math.nan, math.nan))
            fc_rows.append(
                {
                    # one dataset has no average of its own: the row then only carries the paper's
                    "dataset": (
                        "average" + (f" (without {', '.join(excluded)})" if excluded else "")
                        if several
                        else "the paper's average"
                    ),
                    "floor": floor,
                    "ceiling": ceiling,
                    "gap": ceiling - floor,
                    "paper floor": pf,
                    "paper ceiling": pc,
                }
            )
        out[name] = {
            "frame": frame,
            "floor_ceiling": pd.DataFrame(fc_rows),
            "rows": both,
            "excluded": excluded,
            "several": several,
        }
    return out


def overview_table(pgr_rows: pd.DataFrame, lm_bh: dict[str, float]) -> pd.DataFrame:
    """Dataset x method: each probe's AE→BH AUROC against the truth at its EIL (averaged over models), beside the
    LM's own AUROC on the same Bob-hard examples, plus the average over datasets (population left out)."""
    g = pgr_rows[pgr_rows["table"] == "AE->BH"]
    g = g.assign(col=[method_label(m, t, "AE") for m, t in zip(g["method"], g["train"], strict=True)])
    pivot = g.pivot_table(index="dataset", columns="col", values="auc", aggfunc="mean", dropna=False)
    pivot = pivot.loc[paper_order(pivot.index), list(dict.fromkeys(g["col"]))]
    pivot.insert(0, "LM on BH", [lm_bh.get(d, math.nan) for d in pivot.index])
    excluded = _excluded("AE->BH", set(pivot.index))
    kept = pivot.drop(index=excluded)
    avg_name = "average" + (f" (without {', '.join(excluded)})" if excluded else "")
    pivot.loc[avg_name] = kept.mean(axis=0, skipna=True)
    return pivot.reset_index()


def _lm_on_bh(run: RunLayout) -> dict[str, float]:
    """The LM's AUROC against the truth on Bob-hard test examples, per dataset (mean over models), from each
    probe run's summary.json."""
    values: dict[str, list[float]] = {}
    for (_, dataset), path in run.probes.items():
        probe_run = ProbeRun(path)
        if probe_run.finished:
            lm = probe_run.summary.get("lm", {})
            v = ((lm.get("BH") or {}).get("all") or {}).get("alice_label")
            if v is not None:
                values.setdefault(dataset, []).append(float(v))
    return {d: float(np.mean(v)) for d, v in values.items()}


# ---------------------------------------------------------------------------------------------- anomaly
def anomaly_vs_paper(run: RunLayout) -> pd.DataFrame:
    """Mean AUROC of the paper's detector per probe method over the non-excluded (model, dataset) runs."""
    rows = []
    for (model, dataset), path in sorted(run.anomaly.items()):
        for r in AnomalyOutput.open(path).results:
            if r.get("detector") == paper.ANOMALY_DETECTOR and not r.get("excluded"):
                rows.append(
                    {"model": model, "dataset": dataset, "method": r["method"], "auroc": r.get("auroc")}
                )
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).astype({"auroc": float})
    by = df.groupby("method", sort=True)["auroc"].agg(["mean", "count"]).reset_index()
    return pd.DataFrame(
        {
            "method": by["method"],
            "AUROC (mean)": by["mean"],
            "runs": by["count"],
            "paper AUROC": [paper.ANOMALY_AUROC.get(m, math.nan) for m in by["method"]],
        }
    )


# ---------------------------------------------------------------------------------------------- the section
OVERVIEW_CAPTION = (
    "Overview, dataset x method: AUROC against the truth on Bob's hard examples of each probe trained "
    "on Alice's easy examples (at its EIL, averaged over models), and the LM's own AUROC on the same "
    "examples."
)

ANOMALY_CAPTION = (
    f"Anomaly detection AUROC ({paper.ANOMALY_DETECTOR} detector on each method's AE-trained per-layer "
    "scores; Bob-hard anomalous vs Alice-hard normal), mean over runs, beside the paper's mean over "
    f"{paper.MODELS} models and 11 datasets."
)


def summary(run: RunLayout) -> SectionResult:
    """Headline numbers, the PGR tables beside the paper's, anomaly AUROC beside the paper's, key figures."""
    sec = Section("summary", "Summary: results")
    data: dict[str, Any] = {"present": True}
    _, pgr_rows = probe_tables(run)
    heads = headline_table(run)
    if heads.empty and pgr_rows.empty:
        sec.present = False
        sec.note = "no probe results yet (probes/<model>/<dataset>/summary.json): nothing to summarise"
        data = {"present": False, "note": sec.note}
        return sec, data
    sec.blocks.append(_scope_paragraph(run))
    if not heads.empty:
        sec.blocks.append(Table(heads, _headline_caption(heads)))
        data["headlines"] = heads.to_dict(orient="records")
    if pgr_rows.empty:
        return sec, data
    tables = pgr_tables(pgr_rows)
    if len(set(pgr_rows["dataset"])) > 1 and "AE->BH" in tables:
        ov = overview_table(pgr_rows, _lm_on_bh(run))
        sec.blocks.append(Table(ov, OVERVIEW_CAPTION))
        data["overview"] = ov.to_dict(orient="records")
    sec.blocks.append(Paragraph(PGR_NOTE))
    data["pgr"] = {}
    for name, t in tables.items():
        sec.blocks.extend(_pgr_blocks(name, t))
        data["pgr"][name] = {
            "table": t["frame"].to_dict(orient="records"),
            "floor_ceiling": t["floor_ceiling"].to_dict(orient="records"),
            "pgr": t["rows"].to_dict(orient="records"),
            "excluded": t["excluded"],
        }
    anomaly = anomaly_vs_paper(run)
    if not anomaly.empty:
        sec.blocks.append(Table(anomaly, ANOMALY_CAPTION))
        data["anomaly"] = anomaly.to_dict(orient="records")
    curves = probe_curve_figure(probe_results(run), "all")
    if curves is not None:
        sec.blocks.append(curves)
    bars = _pgr_bars_figure(tables)
    if bars is not None:
        sec.blocks.append(bars)
    return sec, data


def _scope_paragraph(run: RunLayout) -> Paragraph:
    """What the summary covers (datasets x models) and which datasets are still waiting for probes, so a reader of
    a partial run knows the averages are over what is there."""
    probed = paper_order(d for _, d in run.probes)
    models = sorted({m for m, _ in run.probes})
    pending = [d for d in run.dataset_names() if d not in probed]
    return Paragraph(
        f"Probe results for {len(probed)} dataset{'s' * (len(probed) != 1)} ({', '.join(probed)}) x "
        f"{len(models)} model{'s' * (len(models) != 1)} ({', '.join(models)})"
        + (f"; not yet probed: {', '.join(pending)}" if pending else "")
        + ". All AUROCs on the test split. Each stage's details follow this summary; the run's "
        "configuration, versions and fingerprints are in the appendix."
    )


def _headline_caption(heads: pd.DataFrame) -> str:
    """The headline table's caption; the anomaly column is explained only when the anomaly stage ran."""
    return (
        "Headline numbers: the LM's own answer AUROC per persona; the probe (trained on Alice's easy "
        "examples) that best reads the truth on Bob's hard examples, its AUROC against the truth and its "
        "PGR"
        + (
            f"; anomaly AUROC ({paper.ANOMALY_DETECTOR} detector on lr scores)."
            if "anomaly AUROC" in heads
            else "."
        )
    )


def _pgr_blocks(name: str, t: dict[str, Any]) -> list[Table]:
    """One PGR table (method x dataset, beside the paper's average) and its floor/ceiling table.  The captions say
    how the average is computed and what it leaves out, because a PGR average can be taken several ways and the
    paper's is a ratio of averages, not an average of ratios."""
    caption = f"PGR, {name}, method x dataset"
    if t["several"]:
        caption += (
            "; 'average' as the paper computes it: (mean AUROC − mean floor) / (mean ceiling − mean floor)"
        )
        if t["excluded"]:
            caption += f", without {', '.join(t['excluded'])} (its label is decided by its difficulty)"
    caption += (
        f". 'paper (average)': the paper's average over {paper.MODELS} models and its datasets "
        f"({paper.PAPER}); the paper has no per-dataset PGR on these scales."
    )
    frame, abbreviated = _short_columns(t["frame"])
    if abbreviated:
        caption += " Columns: " + ", ".join(f"{a} = {d}" for d, a in abbreviated.items()) + "."
    fc_caption = f"Floor and ceiling of {name} per dataset (final-layer lr, averaged over models)"
    fc_caption += "; the paper's pairs are per dataset where it gives them, else its average."
    return [Table(frame, caption, digits=2), Table(t["floor_ceiling"], fc_caption, digits=2)]


def _pgr_bars_figure(tables: dict[str, dict[str, Any]]) -> Figure | None:
    """Each method's PGR (the average over datasets, or the one dataset's) beside the paper's, one panel per PGR
    table, with lines at the floor (0) and the ceiling (1); None when this run has no PGR to show."""
    bars = []
    for name, t in tables.items():
        frame = t["frame"]
        col = "average" if t["several"] else next(c for c in frame.columns if c not in ("method",))
        for values in frame.to_dict(orient="records"):
            bars.append({"table": name, "method": values["method"], "who": "this run", "pgr": values[col]})
            bars.append(
                {"table": name, "method": values["method"], "who": "paper", "pgr": values["paper (average)"]}
            )
    bar_frame = pd.DataFrame(bars).astype({"pgr": float})
    if not bar_frame["pgr"].notna().any():
        return None
    return Figure(
        "summary_pgr",
        figures.grouped_bars(
            bar_frame,
            group="method",
            series="who",
            y="pgr",
            panel="table",
            ylabel="PGR",
            ylim=None,
            chance=None,
            reference=(0.0, 1.0),
        ),
        "PGR by method, this run ("
        + ("average over datasets" if any(t["several"] for t in tables.values()) else "its dataset")
        + f") beside the paper's averages ({paper.PAPER}). Lines at 0 (floor) and 1 (ceiling).",
    )
