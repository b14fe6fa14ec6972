"""The `quirky` command line: one sub-command per pipeline stage.

Each stage owns its own `quirky/<stage>/cli.py` with a Typer app; this module only mounts them and turns
`QuirkyError` into a one-line message with exit status 2 (never a traceback for a user mistake).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from quirky.errors import QuirkyError

app = typer.Typer(
    name="quirky",
    help="Eliciting Latent Knowledge from quirky language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _mount() -> None:
    """Attach each stage's sub-app.  Stages register here in pipeline order."""
    from quirky.datasets.cli import app as datasets_app

    app.add_typer(datasets_app, name="datasets")

    from quirky.finetune.cli import app as finetune_app

    app.add_typer(finetune_app, name="finetune")

    from quirky.models.cli import app as models_app

    app.add_typer(models_app, name="models")

    from quirky.extraction.cli import app as extract_app

    app.add_typer(extract_app, name="extract")

    from quirky.experiments.cli import app as probe_app

    app.add_typer(probe_app, name="probe")

    from quirky.anomaly.cli import app as anomaly_app

    app.add_typer(anomaly_app, name="anomaly")

    from quirky.interventions.cli import app as intervene_app

    app.add_typer(intervene_app, name="intervene")

    from quirky.report.cli import app as report_app

    app.add_typer(report_app, name="report")

    from quirky.results.cli import app as results_app

    app.add_typer(results_app, name="results")

    from quirky.pipeline.cli import demo_cmd, run_cmd

    app.command("run")(run_cmd)
    app.command("demo")(demo_cmd)


def main(argv: list[str] | None = None) -> None:
    _mount()
    try:
        app(args=argv, standalone_mode=True)
    except QuirkyError as e:
        # soft_wrap: one line however narrow the terminal; escape: "[...]" in a message is not rich markup
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
