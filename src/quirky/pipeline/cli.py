"""`quirky run CONFIG` and `quirky demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from quirky.cli_options import QuietOption

console = Console()


def run_cmd(
    config: Path = typer.Argument(..., help="run config (.toml or .yaml); see examples/*.toml"),
    out: str | None = typer.Option(None, "--out", help="override the config's `out` run directory"),
    executor: str | None = typer.Option(
        None, "--executor", help="override [executor] kind: local | submitit-local | slurm"
    ),
    datasets: str | None = typer.Option(
        None,
        "--datasets",
        help="run only these of the config's datasets, comma-separated (the others' results are kept)",
    ),
    quiet: QuietOption[bool] = False,
) -> None:
    """Run the whole pipeline for every (model, dataset) of CONFIG; finished stages are reused."""
    from quirky.pipeline.config import load_config
    from quirky.pipeline.run import check_run_dir, run_pipeline
    from quirky.progress import set_quiet

    set_quiet(quiet)
    cfg = load_config(config)
    if out is not None:
        cfg.out = out
    if executor is not None:
        from quirky.pipeline.config import config_from_dict

        d = cfg.to_dict()
        d["executor"]["kind"] = executor
        cfg = config_from_dict(d)
    if datasets is not None:
        cfg = cfg.only([n.strip() for n in datasets.split(",") if n.strip()])
    check_run_dir(cfg)
    record = run_pipeline(cfg, log=console.print)
    print_headlines(record)


def demo_cmd(
    quick: bool = typer.Option(
        False, "--quick", help="a few-minute version (CI): every stage, fewer steps/examples"
    ),
    out: str | None = typer.Option(None, "--out", help="run directory (default runs/demo[-quick][-DATASET])"),
    dataset: str = typer.Option(
        "hemisphere", "--dataset", help="hemisphere (reaches LM AUROC >= 0.9 on a CPU) or addition"
    ),
    quiet: QuietOption[bool] = False,
) -> None:
    """The demo: make SmolLM2-135M quirky (CPU), extract, probe, detect anomalies, intervene, report."""
    from quirky.pipeline.demo import demo_config
    from quirky.pipeline.run import check_run_dir, run_pipeline
    from quirky.progress import set_quiet

    set_quiet(quiet)
    cfg = demo_config(quick=quick, out=out, dataset=dataset)
    check_run_dir(cfg)
    console.print(f"[bold]quirky demo{' --quick' if quick else ''}[/] -> {cfg.out}")
    record = run_pipeline(cfg, log=console.print)
    print_headlines(record)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def print_headlines(record: dict[str, Any]) -> None:
    """The numbers a researcher wants first, per (model, dataset)."""
    from quirky.pipeline.headlines import headlines

    table = Table(title="headline numbers (test split)")
    for col in (
        "model",
        "dataset",
        "LM AUROC Alice",
        "LM AUROC Bob",
        "best probe AE->BH",
        "AUROC vs truth",
        "PGR",
        "anomaly AUROC",
    ):
        table.add_column(col, no_wrap=col in ("model", "dataset"))  # wrap the headers, never the names
    for job in record["results"]:
        h = headlines(job)
        table.add_row(
            job["model"],
            job["dataset"],
            _fmt(h["lm_auroc_alice"]),
            _fmt(h["lm_auroc_bob"]),
            _fmt(h["best_method"]),
            _fmt(h["best_auroc"]),
            _fmt(h["best_pgr"]),
            _fmt(h["anomaly_auroc"]),
        )
    console.print(table)
    t = record["timings_s"].get("run", {})
    console.print(f"total {sum(t.values()):.0f} s; report: {record['report']}")
