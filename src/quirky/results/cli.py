"""`quirky results collect RUN --out results/NAME` and `quirky results tables` (docs/RESULTS.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Keep a run's small outputs in results/ and rebuild the tables of docs/RESULTS.md from them.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("collect")
def collect_cmd(
    run_dir: Path = typer.Argument(..., help="a run directory written by `quirky run`"),
    out: Path = typer.Option(..., "--out", help="the archive to write (new, empty, or an earlier archive)"),
    time_log: Path | None = typer.Option(
        None, "--time-log", help="GNU `time -v` output of the run (peak memory)"
    ),
) -> None:
    """Copy summaries, PGR/EIL tables, anomaly and finetuning metrics (no models, activations or scores)."""
    from quirky.results.archive import collect

    path = collect(run_dir, out, time_log=time_log)
    Console(stderr=True).print(f"results archive written to {path}")


@app.command("tables")
def tables_cmd(
    results: Path = typer.Option(Path("results"), "--results", help="the folder holding the archives"),
    doc: Path = typer.Option(
        Path("docs/RESULTS.md"), "--doc", help="the Markdown file with generated blocks"
    ),
    check: bool = typer.Option(False, "--check", help="only check that the doc matches the archives"),
) -> None:
    """Rebuild every `<!-- quirky:NAME -->` block of --doc from the archives under --results."""
    from quirky.errors import QuirkyError
    from quirky.results.tables import update_doc

    stale = update_doc(doc, results, check=check)
    console = Console(stderr=True)
    if check and stale:
        raise QuirkyError(
            f"{doc}: blocks {', '.join(stale)} differ from {results}; run `quirky results tables`"
        )
    console.print(f"{doc}: {'up to date' if not stale else 'rebuilt ' + ', '.join(stale)}")
