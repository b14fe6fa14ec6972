"""`quirky report RUN_DIR`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Write an HTML/Markdown/JSON report of a run directory.",
    no_args_is_help=True,
    add_completion=False,
    subcommand_metavar="",
)


# The report is the group's callback, so `quirky report RUN_DIR --out X` works without a verb; interspersed args
# let options follow the positional RUN_DIR (Click groups stop parsing at the first positional otherwise).
@app.callback(invoke_without_command=True, context_settings={"allow_interspersed_args": True})
def report(
    run_dir: Path = typer.Argument(..., help="the run directory (see docs/ARCHITECTURE.md, 'Run directory')"),
    out: Path | None = typer.Option(None, "--out", help="where to write the report (default RUN_DIR/report)"),
) -> None:
    """Build report.html (self-contained), report.md (+ figures/) and summary.json from whatever stages exist."""
    from quirky.report.build import build_report

    console = Console(stderr=True)
    result = build_report(run_dir, out)
    present = [s.title for s in result.sections if s.present]
    missing = [s.title for s in result.sections if not s.present]
    console.print(f"report written to {result.html}")
    console.print(
        f"sections: {', '.join(present) or 'none'}" + (f"; not run: {', '.join(missing)}" if missing else "")
    )
    for key, err in result.errors.items():
        console.print(f"[yellow]warning:[/] section {key}: {err}", highlight=False)
