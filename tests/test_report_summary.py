"""The report's results-first summary: PGR tables averaged the paper's way, the overview table, the paper's numbers,
and figure legends that never cover the data.  Fast: synthetic tables, no model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from quirky.report import figures
from quirky.report import paper_numbers as paper
from quirky.report.summary import overview_table, pgr_tables


def _rows() -> pd.DataFrame:
    """AE->BH rows: addition with two models, capitals with one (ccs missing its AUROC), population with one."""
    spec = {  # dataset: (floor, ceiling, {model: {(method, train): auc}})
        "addition": (
            0.4,
            0.8,
            {
                "m1": {("lr", "AE"): 0.7, ("mean-diff", "AE"): 0.8, ("ccs", "all@alice_label"): 0.5},
                "m2": {("lr", "AE"): 0.5, ("mean-diff", "AE"): 0.8, ("ccs", "all@alice_label"): 0.5},
            },
        ),
        "capitals": (
            0.6,
            0.7,
            {"m1": {("lr", "AE"): 0.69, ("mean-diff", "AE"): 0.62, ("ccs", "all@alice_label"): math.nan}},
        ),
        "population": (
            0.5,
            0.9,
            {"m1": {("lr", "AE"): 0.9, ("mean-diff", "AE"): 0.5, ("ccs", "all@alice_label"): 0.7}},
        ),
    }
    rows = []
    for dataset, (floor, ceiling, models) in spec.items():
        for model, aucs in models.items():
            for (method, train), auc in aucs.items():
                rows.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "table": "AE->BH",
                        "method": method,
                        "train": train,
                        "test": "BH",
                        "eil_layer": 3,
                        "auc": auc,
                        "floor": floor,
                        "ceiling": ceiling,
                        "pgr": (auc - floor) / (ceiling - floor),
                    }
                )
    return pd.DataFrame(rows)


def test_pgr_table_averages_like_the_paper() -> None:
    t = pgr_tables(_rows())["AE->BH"]
    frame = t["frame"].set_index("method")
    assert t["excluded"] == ["population"]
    # datasets in the paper's column order, then our average and the paper's
    assert list(frame.columns) == ["capitals", "population", "addition", "average", "paper (average)"]
    # per dataset: AUROC averaged over models first, then the ratio: lr on addition (mean(.7, .5) - .4) / .4
    assert frame.loc["lr", "addition"] == pytest.approx(0.5)
    assert frame.loc["lr", "capitals"] == pytest.approx(0.9)
    assert frame.loc["lr", "population"] == pytest.approx(1.0)  # shown, but left out of the average
    # average: (mean AUC - mean floor) / (mean ceiling - mean floor) over addition and capitals:
    # (.645 - .5) / (.75 - .5) = .58, not the mean of the two PGRs (.7) and not counting population
    assert frame.loc["lr", "average"] == pytest.approx(0.58)
    assert frame.loc["mean-diff", "average"] == pytest.approx((0.71 - 0.5) / 0.25)
    # ccs has no AUROC on capitals: dropped from both the sums and the count (addition alone)
    assert frame.loc["ccs (all@alice_label)", "average"] == pytest.approx(0.25)
    assert math.isnan(frame.loc["ccs (all@alice_label)", "capitals"])
    # the method-average row: every finite cell weighted equally
    assert frame.loc["method average", "addition"] == pytest.approx((np.mean([0.6, 0.8, 0.5]) - 0.4) / 0.4)
    assert frame.loc["method average", "average"] == pytest.approx((3.21 / 5 - 2.4 / 5) / (3.8 / 5 - 2.4 / 5))
    # the paper's averages beside ours, by (method, training set)
    assert frame.loc["lr", "paper (average)"] == paper.AE_BH_PGR[("lr", "AE")] == 0.68
    assert frame.loc["ccs (all@alice_label)", "paper (average)"] == 0.15
    assert frame.loc["method average", "paper (average)"] == paper.AE_BH_METHOD_AVERAGE
    fc = t["floor_ceiling"].set_index("dataset")
    assert fc.loc["addition", ["floor", "ceiling", "paper floor", "paper ceiling"]].tolist() == pytest.approx(
        [0.4, 0.8, 0.27, 0.92]
    )
    assert fc.loc["capitals", ["paper floor", "paper ceiling"]].tolist() == [0.89, 0.93]
    assert np.isnan(fc.loc["population", "paper floor"])  # the paper has no population pair
    avg = fc.loc["average (without population)"]
    assert [avg["floor"], avg["ceiling"], avg["paper floor"], avg["paper ceiling"]] == pytest.approx(
        [0.5, 0.75, 0.53, 0.87]
    )


def test_single_dataset_has_no_average_column() -> None:
    rows = _rows()
    t = pgr_tables(rows[rows["dataset"] == "addition"])["AE->BH"]
    assert list(t["frame"].columns) == ["method", "addition", "paper (average)"]
    fc = t["floor_ceiling"].set_index("dataset")
    # the paper's average pair is still shown, our own "average" of one dataset is not invented
    assert (
        np.isnan(fc.loc["the paper's average", "floor"])
        and fc.loc["the paper's average", "paper floor"] == 0.53
    )


def test_overview_is_dataset_by_method() -> None:
    ov = overview_table(_rows(), {"addition": 0.3, "capitals": 0.6, "population": 0.9}).set_index("dataset")
    assert list(ov.columns) == ["LM on BH", "lr", "mean-diff", "ccs (all@alice_label)"]
    assert list(ov.index) == ["capitals", "population", "addition", "average (without population)"]
    assert ov.loc["addition", "lr"] == pytest.approx(0.6)  # mean over the two models
    avg = ov.loc["average (without population)"]
    assert avg["lr"] == pytest.approx((0.6 + 0.69) / 2)
    assert avg["LM on BH"] == pytest.approx(0.45)
    assert avg["ccs (all@alice_label)"] == pytest.approx(0.5)  # capitals' NaN skipped


def test_paper_numbers_are_consistent() -> None:
    """The transcribed constants agree with each other the way the paper's tables do (a typo breaks one)."""
    from quirky.datasets import DATASET_NAMES
    from quirky.probes import METHODS

    assert set(paper.AE_BH_DATASETS) == set(DATASET_NAMES) - set(paper.EXCLUDED_WHEN_HARD)
    assert set(paper.AE_BH_FLOOR_CEILING) == set(paper.AE_BH_DATASETS)
    assert tuple(paper.DATASET_ABBREVIATIONS) == DATASET_NAMES  # the paper's column order is quirky's
    for table in (paper.AE_BH_PGR, paper.A_B_PGR):
        assert {m for m, _ in table} <= set(METHODS)
    assert set(paper.ANOMALY_AUROC) <= set(METHODS)
    # the method average is the mean of the nine AE->BH rows (all share floor and ceiling)
    assert np.mean(list(paper.AE_BH_PGR.values())) == pytest.approx(paper.AE_BH_METHOD_AVERAGE, abs=0.005)
    # the average floor and ceiling are the means of the per-dataset pairs
    pairs = np.array(list(paper.AE_BH_FLOOR_CEILING.values()))
    assert pairs.mean(axis=0) == pytest.approx([paper.AE_BH_FLOOR, paper.AE_BH_CEILING], abs=0.005)
    # the abstract's numbers are lr-on-pair's (best) PGRs and the best anomaly AUROC
    assert max(paper.A_B_PGR.values()) == paper.A_B_PGR[("lr-on-pair", "A")] == paper.ABSTRACT_A_B_BEST_PGR
    assert max(paper.AE_BH_PGR.values()) == paper.AE_BH_PGR[("lr-on-pair", "AE")]
    assert paper.AE_BH_PGR[("lr-on-pair", "AE")] == paper.ABSTRACT_AE_BH_BEST_PGR
    assert max(paper.ANOMALY_AUROC.values()) == paper.ABSTRACT_ANOMALY_AUROC
    # the pre-fix notebook's mean-diff-on-pair was mean-diff
    assert paper.AE_BH_PGR[("mean-diff-on-pair", "AE")] == paper.AE_BH_PGR[("mean-diff", "AE")]


# ------------------------------------------------------------------------------------------- legends
def _captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """Keep the figures instead of rendering them to PNG, to measure where their legends are."""
    figs: list = []
    monkeypatch.setattr(figures, "_png", lambda fig: figs.append(fig) or b"")
    return figs


def _overlaps(fig) -> list[tuple[str, str]]:
    """(legend, axes title) pairs whose drawn boxes intersect: a legend inside the data area."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has no legend at all"
    return [
        (legend.get_texts()[0].get_text(), ax.get_title())
        for legend in legends
        for ax in fig.axes
        if ax.get_visible() and legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    ]


def test_legends_sit_outside_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    figs = _captured(monkeypatch)
    x = np.linspace(0.1, 1.0, 10)
    curves = pd.DataFrame(
        [
            {"panel": p, "series": s, "x": xi, "y": 0.5 + 0.4 * xi * (k + 1) / 3, "lo": 0.4, "hi": 0.9}
            for p in ("A → B", "AE → BH", "A → A")
            for k, s in enumerate(("lr", "mean-diff", "ccs"))
            for xi in x
        ]
    )
    figures.line_panels(
        curves,
        panel="panel",
        series="series",
        x="x",
        y="y",
        lo="lo",
        hi="hi",
        references={"A → B": [("LM", 0.6)], "AE → BH": [("LM", 0.55)]},
        xlabel="depth",
        ylabel="AUROC",
    )
    bars = pd.DataFrame(
        [
            {"table": t, "method": m, "who": w, "pgr": v}
            for t in ("AE->BH", "A->B")
            for m, v in (("lr", 0.9), ("lda", 0.7), ("ccs", 0.95))
            for w in ("this run", "paper")
        ]
    )
    figures.grouped_bars(bars, group="method", series="who", y="pgr", panel="table", ylabel="PGR", ylim=None)
    history = pd.DataFrame(
        {
            "step": [0, 10, 20, 40],
            "train_loss": [1.0, 0.8, 0.6, 0.5],
            "loss": [1.1, 0.9, 0.7, 0.6],
            "alice_auroc": [0.5, 0.7, 0.9, 0.99],
            "bob_auroc": [0.5, 0.6, 0.8, 0.98],
            "bob_vs_truth_auroc": [0.5, 0.4, 0.2, 0.05],
        }
    )
    figures.finetune_curves({"m / addition": history, "m / capitals": history})
    rng = np.random.default_rng(0)
    scores = pd.DataFrame(
        {
            "panel": ["addition"] * 400,
            "subset": ["normal"] * 200 + ["anomalous"] * 200,
            "score": np.r_[rng.normal(0, 1, 200), rng.normal(2, 1, 200)],
        }
    )
    figures.score_histograms(scores, panel="panel", group="subset", value="score", xlabel="score")
    assert len(figs) == 4
    for fig in figs:
        assert _overlaps(fig) == []
    # one legend per figure, each series named once even when it appears in every panel
    line_legend = figs[0].legends[0]
    assert [t.get_text() for t in line_legend.get_texts()] == ["lr", "mean-diff", "ccs", "LM"]


def test_a_legend_inside_the_axes_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlap check itself: the old in-axes legend placement fails it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="lr")
    ax.legend(loc="best")
    assert _overlaps(fig) == [("lr", "")]
    plt.close(fig)


def test_many_dataset_columns_use_the_paper_abbreviations() -> None:
    from quirky.report.summary import _short_columns

    few = pd.DataFrame(columns=["method", "addition", "capitals", "average"])
    assert _short_columns(few) == (few, {})
    names = ["capitals", "hemisphere", "sciq", "sentiment", "addition", "modularaddition"]
    many = pd.DataFrame(columns=["method", *names, "average", "paper (average)"])
    short, renamed = _short_columns(many)
    assert list(short.columns) == [
        "method",
        "cap",
        "hem",
        "sciq",
        "snt",
        "add",
        "mod",
        "average",
        "paper (average)",
    ]
    assert renamed == {n: paper.DATASET_ABBREVIATIONS[n] for n in names if n != "sciq"}
