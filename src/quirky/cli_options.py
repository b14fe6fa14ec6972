"""Command-line options that several stages declare alike, written once.

Each alias fixes an option's flags and help text and leaves its type to the command, as in
`adapter: AdapterOption[Path | None] = None`; the default stays at the command too (`= None`, or none for a
required option).  Only options whose flags and help text are the same everywhere live here, so `--help` reads the
same as when each stage spelled them out.  Importing this module loads nothing but Typer (`quirky --help` stays
fast).
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import typer

from quirky.errors import QuirkyError

T = TypeVar("T")

ModelOption = Annotated[
    T, typer.Option("--model", help="`smollm2`, a hub id, a local model dir or a .gguf file")
]
AdapterOption = Annotated[T, typer.Option("--adapter", help="PEFT adapter directory (merged into the model)")]
DatasetOption = Annotated[T, typer.Option("--dataset", help="dataset directory (`quirky datasets build`)")]
DeviceOption = Annotated[T, typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")]
DtypeOption = Annotated[T, typer.Option("--dtype", help="model dtype (default: bf16 on GPU, float32 on CPU)")]
BatchSizeOption = Annotated[T, typer.Option("--batch-size", help="prompts per forward pass")]
ActivationsOption = Annotated[
    T, typer.Option("--activations", help="activation stores of the probe run (default: the recorded path)")
]
QuietOption = Annotated[
    T,
    typer.Option(
        "--quiet", "-q", help="no progress bar (log lines are kept); also off when stderr is not a terminal"
    ),
]


def require_options(command: str, given: dict[str, object]) -> None:
    """Refuse a run whose `given` options (flag -> value) include one left out (None).  For a group callback that
    also has sub-commands: it cannot declare them required, or Click would demand them before `COMMAND info` too."""
    missing = [flag for flag, value in given.items() if value is None]
    if missing:
        raise QuirkyError(f"quirky {command} needs {', '.join(missing)} (see `quirky {command} --help`)")
