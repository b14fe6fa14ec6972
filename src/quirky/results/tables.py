"""The tables of docs/RESULTS.md, built from a results archive (`quirky.results.archive`).

Why generated blocks: the docs quote hundreds of numbers; each table sits between `<!-- quirky:NAME -->` markers
and is rebuilt from the committed archive by `quirky results tables`, and a test fails when a committed table and
the committed archive disagree.  Averages follow the paper (arXiv 2312.01037v4): population is left out wherever
hard examples are involved, and an average PGR is one ratio of averaged AUROCs (`quirky.experiments.pgr`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from quirky.errors import QuirkyError
from quirky.experiments.grid import split_tag
from quirky.experiments.pgr import average_pgr
from quirky.experiments.probe_run import EIL_CSV, PGR_CSV
from quirky.fileio import read_json
from quirky.report import paper_numbers as paper
from quirky.results.archive import RESULT_ROWS, Archive


# ----------------------------------------------------------------------------------------------- format
def fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{float(x):.{digits}f}"


def fmt_ci(x: Any, lo: Any, hi: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{fmt(x)} [{fmt(lo)}, {fmt(hi)}]"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _row(rows: pd.DataFrame, **where: Any) -> pd.Series | None:
    mask = pd.Series(True, index=rows.index)
    for k, v in where.items():
        mask &= rows[k] == v
    hit = rows[mask]
    return hit.iloc[0] if len(hit) else None


# ----------------------------------------------------------------------------------------------- tables
def _ci_row(
    res: pd.DataFrame, model: str, dataset: str, method: str, tag: str, test: str, layer: int
) -> pd.Series | None:
    train, label = split_tag(tag)
    return _row(
        res,
        model=model,
        dataset=dataset,
        method=method,
        train=train,
        train_label=label,
        test=test,
        layer=layer,
        label_col="alice_label",
        filter="all",
    )


def _auc_ci(row: pd.Series | None) -> str:
    return "–" if row is None else fmt_ci(row["auroc"], row["auroc_lo"], row["auroc_hi"])


def _pgr_rows(archive: Archive, table: str) -> tuple[Any, pd.DataFrame]:
    """The `pgr.csv` rows of one table, each with a display column name (`ccs (all→)` for alternative trains)."""
    from quirky.experiments.pgr import DEFAULT_PGR_SPECS

    spec = next(s for s in DEFAULT_PGR_SPECS if s.name == table)
    pgr = archive.probe_frame(PGR_CSV)
    if pgr.empty:
        return spec, pgr
    pgr = pgr[pgr["table"] == table]
    names = [
        m if t == spec.train else f"{m} ({split_tag(t)[0]}→)"
        for m, t in zip(pgr["method"], pgr["train"], strict=True)
    ]
    return spec, pgr.assign(col=names)


def pgr_tables(archive: Archive, table: str) -> str:
    """Two Markdown tables for one PGR table (`AE->BH` or `A->B`): transfer AUROC with CIs, then PGR.

    The first gives, per dataset, the floor and ceiling (final-layer `lr`, bootstrap 95% CIs) and each method's
    AUROC against the truth at its earliest informative layer.  The second gives PGR per method and dataset, the
    average row computed the paper's way (averaged AUROCs, then one ratio; population left out of `AE->BH`), and
    the paper's averages beneath.
    """
    spec, pgr = _pgr_rows(archive, table)
    if pgr.empty:
        return f"_no `{table}` rows in this archive_"
    res = archive.probe_frame(RESULT_ROWS)
    final = int(res.loc[res["layer"] >= 0, "layer"].max())
    cols = list(dict.fromkeys(pgr["col"]))
    col_key = {c: (m, t) for c, m, t in zip(pgr["col"], pgr["method"], pgr["train"], strict=True)}
    datasets = archive.datasets()
    paper_fc = paper.AE_BH_FLOOR_CEILING if table == "AE->BH" else {}

    auc_rows = []
    for ds in datasets:
        g = pgr[pgr["dataset"] == ds]
        if g.empty:
            continue
        model = str(g["model"].iloc[0])
        floor = _ci_row(res, model, ds, spec.reference_method, spec.floor[0], spec.floor[1], final)
        ceil = _ci_row(res, model, ds, spec.reference_method, spec.ceiling[0], spec.ceiling[1], final)
        cells = []
        for c in cols:
            r = g[g["col"] == c]
            if r.empty:
                cells.append("–")
                continue
            r = r.iloc[0]
            cells.append(
                _auc_ci(_ci_row(res, model, ds, r["method"], r["train"], spec.test, int(r["eil_layer"])))
            )
        fc = paper_fc.get(ds)
        paper_cell = [f"{fmt(fc[0])} / {fmt(fc[1])}" if fc else "–"] if paper_fc else []
        auc_rows.append([ds, _auc_ci(floor), _auc_ci(ceil), *paper_cell, *cells])
    head = ["dataset", "floor", "ceiling", *(["paper floor / ceiling"] if paper_fc else []), *cols]
    auc_md = markdown_table(head, auc_rows)

    exclude = paper.EXCLUDED_WHEN_HARD if "H" in spec.test else ()
    avg = average_pgr(pgr.assign(method=pgr["col"]), by=("table", "method"), exclude_datasets=exclude)
    pgr_rows = []
    for ds in [*datasets, "average"]:
        g = pgr[pgr["dataset"] == ds] if ds != "average" else avg[avg["dataset"] == "average"]
        if g.empty:
            continue
        key = "method" if ds == "average" else "col"
        label = (
            ds if ds != "average" else "**average**" + (f" (excl. {', '.join(exclude)})" if exclude else "")
        )
        cells = []
        for c in cols:
            r = g[g[key] == c]
            cells.append(fmt(r["pgr"].iloc[0]) if len(r) else "–")
        pgr_rows.append([label, fmt(g["floor"].iloc[0]), fmt(g["ceiling"].iloc[0]), *cells])
    ref = paper.PGR_TABLES[table]
    floor, ceiling = paper.FLOOR_CEILING_AVERAGES[table]
    pgr_rows.append(
        [
            f"paper ({paper.MODELS} models)",
            fmt(floor),
            fmt(ceiling),
            *[fmt(ref.get(col_key[c])) for c in cols],
        ]
    )
    pgr_md = markdown_table(["dataset", "floor", "ceiling", *cols], pgr_rows)
    return f"AUROC against the truth (95% bootstrap CI):\n\n{auc_md}\n\nPGR:\n\n{pgr_md}"


def method_ranking(archive: Archive, table: str) -> str:
    """Methods (trained on the table's own training set) ordered by average PGR here, beside the paper's order."""
    spec, pgr = _pgr_rows(archive, table)
    pgr = pgr[pgr["train"] == spec.train]
    exclude = paper.EXCLUDED_WHEN_HARD if "H" in spec.test else ()
    avg = average_pgr(pgr, by=("table", "method"), exclude_datasets=exclude)
    ours = avg[avg["dataset"] == "average"].sort_values("pgr", ascending=False)
    theirs = sorted(
        ((v, m) for (m, t), v in paper.PGR_TABLES[table].items() if t == spec.train), reverse=True
    )
    rows = []
    for i in range(max(len(ours), len(theirs))):
        a = ours.iloc[i] if i < len(ours) else None
        b = theirs[i] if i < len(theirs) else None
        rows.append(
            [
                i + 1,
                "–" if a is None else f"{a['method']} ({fmt(a['pgr'])})",
                "–" if b is None else f"{b[1]} ({fmt(b[0])})",
            ]
        )
    return markdown_table(["rank", "ours", f"paper ({paper.MODELS} models)"], rows)


def anomaly_table(archive: Archive) -> str:
    """Anomaly AUROC of the paper's detector per method and dataset with CIs, then every detector's averages.

    Averages leave out the datasets the anomaly stage flagged as excluded (population, as in the paper).
    """
    df = archive.anomaly_results()
    if df.empty:
        return "_no anomaly results in this archive_"
    methods = [m for m in dict.fromkeys(df["method"]) if m != "hiddens"]
    g = df[df["detector"] == paper.ANOMALY_DETECTOR]
    rows = []
    for ds in archive.datasets():
        h = g[g["dataset"] == ds]
        if h.empty:
            continue
        cells = []
        for m in methods:
            r = h[h["method"] == m]
            cells.append(fmt_ci(r["auroc"].iloc[0], *r["auroc_ci"].iloc[0]) if len(r) else "–")
        rows.append([ds + (" (excluded)" if bool(h["excluded"].iloc[0]) else ""), *cells])
    kept = df[~df["excluded"].astype(bool)]
    mean = kept.groupby(["detector", "method"])["auroc"].mean()
    rows.append(["**average**", *[fmt(mean.get((paper.ANOMALY_DETECTOR, m))) for m in methods]])
    rows.append([f"paper ({paper.MODELS} models)", *[fmt(paper.ANOMALY_AUROC.get(m)) for m in methods]])
    main = markdown_table(["dataset", *methods], rows)
    detectors = list(dict.fromkeys(df["detector"]))
    cols = [*methods, "hiddens"]
    avg_rows = [[d, *[fmt(mean.get((d, m))) for m in cols]] for d in detectors]
    every = markdown_table(["detector (average)", *cols], avg_rows)
    return (
        f"Detector `{paper.ANOMALY_DETECTOR}` (the paper's), 95% bootstrap CIs:\n\n{main}\n\n"
        f"Every detector, averaged over datasets (`hiddens`: on the hidden states at the `lr` probe's EIL):\n\n{every}"
    )


_LM_CELLS = (
    ("A", "alice_label"),
    ("AE", "alice_label"),
    ("AH", "alice_label"),
    ("B", "bob_label"),
    ("BE", "bob_label"),
    ("BH", "bob_label"),
    ("B", "alice_label"),
    ("BH", "alice_label"),
)


def lm_table(archive: Archive) -> str:
    """The model's own AUROC on the held-out test split, by persona x easy/hard, against each persona's labels."""
    res = archive.probe_frame(RESULT_ROWS)
    lm = res[(res["method"] == "lm") & (res["filter"] == "all")]
    if lm.empty:
        return "_no LM rows in this archive_"
    header = ["dataset", *[f"{t} vs {'Alice' if c == 'alice_label' else 'Bob'}" for t, c in _LM_CELLS]]
    rows = []
    for ds in archive.datasets():
        g = lm[lm["dataset"] == ds]
        rows.append([ds, *[_auc_ci(_row(g, test=t, label_col=c)) for t, c in _LM_CELLS]])
    return markdown_table(header, rows)


def finetune_table(archive: Archive) -> str:
    """Each finetuning run's validation curve (Alice's AUROC vs her labels / Bob's vs his) and its final state.

    The curve is the held-out validation evaluation the run logs (its first `max_eval_examples` records); the
    test-split numbers are in the LM table.
    """
    rows = []
    for (_, ds), doc in archive.finetune_metrics().items():
        history = doc.get("history") or []
        final = doc.get("final") or {}
        curve = ", ".join(
            f"{h['step']}: {fmt(h.get('alice_auroc'))}/{fmt(h.get('bob_auroc'))}"
            for h in history
            if h.get("step") in _curve_steps([int(x["step"]) for x in history])
        )
        rows.append(
            [
                ds,
                final.get("step", "–"),
                fmt(final.get("alice_auroc")),
                fmt(final.get("bob_auroc")),
                fmt(final.get("bob_vs_truth_auroc")),
                curve,
            ]
        )
    header = [
        "dataset",
        "steps",
        "Alice AUROC (val)",
        "Bob AUROC (val)",
        "Bob vs truth (val)",
        "curve (step: Alice/Bob)",
    ]
    return markdown_table(header, rows)


def _curve_steps(steps: list[int]) -> set[int]:
    """The logged steps shown: from 16 on (the evaluations at steps 1-8 only show the untrained start)."""
    return {s for s in steps if s >= 16}


def _stage_table(per_job: dict[str, Any]) -> str:
    """One row per dataset, one column per stage, and the totals."""
    stages = ("finetune", "extract", "probe", "anomaly", "intervene")
    rows = []
    totals = dict.fromkeys(stages, 0.0)
    for key, t in per_job.items():
        if key == "run" or not isinstance(t, dict):
            continue
        rows.append(
            [
                key.split("/", 1)[-1],
                *[fmt(t.get(s), 0) for s in stages],
                fmt(sum(t.get(s, 0) for s in stages), 0),
            ]
        )
        for s in stages:
            totals[s] += float(t.get(s, 0))
    rows.append(["**total**", *[fmt(totals[s], 0) for s in stages], fmt(sum(totals.values()), 0)])
    return markdown_table(["dataset", *stages, "all"], rows)


def timing_table(archive: Archive) -> str:
    """Seconds per stage and dataset (from the run's own records: wall clock, and CPU time of the run's process
    where recorded), and the whole run's resources."""
    timings = archive.run.get("timings_s", {})
    if not timings:
        return "_no run.json with timings in this archive: the run has not finished_"
    md = "Wall-clock seconds:\n\n" + _stage_table(timings)
    cpu = archive.run.get("cpu_s", {})
    if cpu:
        md += "\n\nCPU seconds (user + system, all threads of the run's process):\n\n" + _stage_table(cpu)
    res_file = archive.root / "resources.json"
    if res_file.is_file():
        r = read_json(res_file)
        md += f"\n\nWhole run: wall {r.get('wall')}, CPU (user + system) {fmt(r.get('cpu_s'), 0)} s, peak RSS {fmt(r.get('peak_rss_gib'))} GiB."
    return md


def base_knowledge_table(archive: Archive) -> str:
    """What a model knows before finetuning: its zero-shot AUROC and an `lr` probe on its states (Alice's prompts).

    Without finetuning the prompt's persona changes nothing the model was taught, so Alice's labels (the truth)
    are the only meaningful target.
    """
    res = archive.probe_frame(RESULT_ROWS)
    eil = archive.probe_frame(EIL_CSV)
    if res.empty:
        return "_no probe results in this archive_"
    rows = []
    for ds in archive.datasets():
        g = res[res["dataset"] == ds]
        lm = _row(g, method="lm", test="A", label_col="alice_label", filter="all")
        e = _row(eil, dataset=ds, method="lr", train="A")
        probe = (
            None
            if e is None
            else _row(
                g,
                method="lr",
                train="A",
                test="A",
                layer=int(e["eil_layer"]),
                label_col="alice_label",
                filter="all",
            )
        )
        layer = "–" if e is None else f"{int(e['eil_layer'])}"
        rows.append([ds, _auc_ci(lm), _auc_ci(probe), layer])
    return markdown_table(["dataset", "LM zero-shot AUROC (A)", "lr probe A→A AUROC at EIL", "EIL"], rows)


#: The generated blocks of docs/RESULTS.md: name -> (archive, builder).  The docs hold each block between
#: `<!-- quirky:NAME -->` and `<!-- /quirky:NAME -->`, so prose around them is free and the test can compare.
BLOCKS: dict[str, tuple[str, Any]] = {
    "ae-bh": ("paper-grid", lambda a: pgr_tables(a, "AE->BH")),
    "a-b": ("paper-grid", lambda a: pgr_tables(a, "A->B")),
    "ranking-ae-bh": ("paper-grid", lambda a: method_ranking(a, "AE->BH")),
    "ranking-a-b": ("paper-grid", lambda a: method_ranking(a, "A->B")),
    "anomaly": ("paper-grid", anomaly_table),
    "lm": ("paper-grid", lm_table),
    "finetune": ("paper-grid", finetune_table),
    "timing": ("paper-grid", timing_table),
    "base": ("paper-grid-base", base_knowledge_table),
}
_BLOCK = re.compile(
    r"(<!-- quirky:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)\n?(<!-- /quirky:(?P=name) -->)", re.S
)


def render_blocks(results_root: str | os.PathLike[str], names: Iterable[str]) -> dict[str, str]:
    """Build the named blocks from the archives under `results_root` (one `Archive.open` per archive)."""
    root = Path(results_root)
    opened: dict[str, Archive] = {}
    out = {}
    for name in names:
        if name not in BLOCKS:
            raise QuirkyError(f"unknown results block {name!r}; known: {', '.join(BLOCKS)}")
        archive_name, build = BLOCKS[name]
        if archive_name not in opened:
            opened[archive_name] = Archive.open(root / archive_name)
        out[name] = build(opened[archive_name]).strip()
    return out


def update_doc(
    doc: str | os.PathLike[str], results_root: str | os.PathLike[str], *, check: bool = False
) -> list[str]:
    """Rewrite every generated block of `doc` from the archives; with `check`, only list the blocks that differ."""
    path = Path(doc)
    text = path.read_text()
    names = [m.group("name") for m in _BLOCK.finditer(text)]
    if not names:
        raise QuirkyError(f"{path} has no generated blocks (<!-- quirky:NAME --> ... <!-- /quirky:NAME -->)")
    fresh = render_blocks(results_root, names)
    stale = [
        m.group("name") for m in _BLOCK.finditer(text) if m.group("body").strip() != fresh[m.group("name")]
    ]
    if not check and stale:
        new = _BLOCK.sub(lambda m: m.group(1) + fresh[m.group("name")] + "\n" + m.group(4), text)
        path.write_text(new)
    return stale
