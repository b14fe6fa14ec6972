"""The `quirky` command line: one sub-command per pipeline stage.

Each stage owns its own `quirky/<stage>/cli.py` with a Typer app; this module only mounts them and turns
`QuirkyError` into a one-line message with exit status 2 (never a traceback for a user mistake).
"""

from __future__ import annotations

import errno
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from quirky.errors import QuirkyError
from quirky.outdir import release_all

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


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _error(message: str) -> None:
    # soft_wrap: one line however narrow the terminal; escape: "[...]" in a message is not rich markup
    Console(stderr=True).print(
        f"[bold red]error:[/] {escape(_one_line(message))}", highlight=False, soft_wrap=True
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI.  Every error is one line on stderr: a `QuirkyError` as written (exit 2), anything else with
    its type and a pointer to `--debug` (exit 1; `--debug` anywhere on the command line, or QUIRKY_DEBUG=1,
    re-raises it with the full traceback instead), an interrupt as "interrupted" (exit 130).
    `--trust-remote-code` (anywhere) lets a model folder's own Python code run; it never does otherwise."""
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:cut] or os.environ.get("QUIRKY_DEBUG", "") not in ("", "0")
    if "--trust-remote-code" in args[:cut]:  # global: every stage that loads a model honours it
        os.environ["QUIRKY_TRUST_REMOTE_CODE"] = "1"
    args = [a for i, a in enumerate(args) if not (i < cut and a in ("--debug", "--trust-remote-code"))]
    _mount()
    try:
        app(args=args, standalone_mode=True)
    except QuirkyError as e:
        release_all()
        if debug:
            raise
        _error(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        release_all()
        if debug:
            raise
        _error("interrupted (rerun the same command to resume where the stage supports it)")
        sys.exit(130)
    except Exception as e:
        # never a traceback for a user: damaged files surface deep inside pyarrow, safetensors, transformers
        release_all()
        if debug:
            raise
        hint = "this may be a damaged input file; rerun with --debug for the traceback"
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "the disk is full: free some space and rerun the same command; finished outputs are kept"
        _error(f"{type(e).__name__}: {e} ({hint})")
        sys.exit(1)


if __name__ == "__main__":
    main()
