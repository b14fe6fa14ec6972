"""`quirky anomaly --probes DIR --out DIR`: mechanistic anomaly detection on a probe run's outputs."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from quirky.anomaly.defaults import DEFAULT_DETECTORS
from quirky.cli_options import ActivationsOption

app = typer.Typer(
    help="Flag Bob's (untruthful) examples from a probe run, fitting detectors on trusted Alice-easy data only.",
    no_args_is_help=True,
    add_completion=False,
    subcommand_metavar="",
)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _fmt(x: object) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


@app.callback(invoke_without_command=True, context_settings={"allow_interspersed_args": True})
def anomaly(
    probes: list[Path] = typer.Option(
        ..., "--probes", help="probe output directory (`quirky probe --out`); repeatable"
    ),
    out: Path = typer.Option(..., "--out", help="output directory (anomaly.json, scores.parquet)"),
    detector: list[str] | None = typer.Option(
        None,
        "--detector",
        help=f"detector(s), comma-separated or repeated (default: {','.join(DEFAULT_DETECTORS)})",
    ),
    method: list[str] | None = typer.Option(
        None, "--method", help="probe method(s) whose AE-trained scores are the features (default: lr)"
    ),
    exclude: str = typer.Option(
        "population", "--exclude", help="datasets left out of averages, comma-separated ('' for none)"
    ),
    layer: int | None = typer.Option(
        None, "--layer", help="layer of the hidden states for `mahalanobis` (default: the AE probe's EIL)"
    ),
    activations: ActivationsOption[Path | None] = None,
    n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples for the AUROC CI"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and of IsolationForest"),
) -> None:
    """Fit each detector on the Alice-easy test examples (trusted) and report its AUROC for Alice-hard (normal) vs
    Bob-hard (anomalous), with a bootstrap CI and recall at 1% and 5% false-positive rate."""
    from quirky.anomaly.runner import run_anomaly

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    doc = run_anomaly(
        probes,
        out,
        detectors=_split(detector) or list(DEFAULT_DETECTORS),
        methods=_split(method) or ["lr"],
        exclude=_split([exclude]),
        layer=layer,
        activations=activations,
        n_boot=n_boot,
        seed=seed,
    )
    console = Console()
    for model, dataset in dict.fromkeys((r["model"], r["dataset"]) for r in doc["results"]):
        rows = [r for r in doc["results"] if (r["model"], r["dataset"]) == (model, dataset)]
        note = (
            " (excluded from averages: " + str(rows[0]["exclusion_reason"]) + ")"
            if rows[0]["excluded"]
            else ""
        )
        table = Table(
            title=f"{model} / {dataset}: Alice-hard (normal) vs Bob-hard (anomalous){note}",
            header_style="bold",
        )
        for col in ("features", "detector", "AUROC", "95% CI", "rec@1%", "rec@5%"):
            table.add_column(
                col, justify="left" if col in ("features", "detector") else "right", no_wrap=True
            )
        for r in rows:
            lo, hi = r["auroc_ci"]
            feats = r["method"] if r["layer"] is None else f"{r['method']} L{r['layer']}"
            table.add_row(
                feats,
                r["detector"],
                _fmt(r["auroc"]),
                f"{_fmt(lo)}-{_fmt(hi)}",
                _fmt(r["recall_at_fpr"]["0.01"]),
                _fmt(r["recall_at_fpr"]["0.05"]),
            )
        console.print(table)
    console.print(f"written to {out}")
