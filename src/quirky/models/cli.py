"""`quirky models prepare [smollm2]`: build the cached plain copy of a GGUF model once (scripts/setup.sh can call
it), and `quirky models show NAME`: what a model string resolves to."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from quirky.errors import QuirkyError

app = typer.Typer(
    help="Resolve and prepare models (the built-in `smollm2`, GGUF files, local dirs, hub ids).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.command("prepare")
def prepare_cmd(
    name: str = typer.Argument("smollm2", help="`smollm2` or a .gguf file"),
    force: bool = typer.Option(False, "--force", help="rebuild the cache even if it is valid"),
) -> None:
    """Dequantize a GGUF model once into the quirky cache (a plain safetensors copy, logits checked identical)."""
    from quirky.models.loading import build_gguf_cache, resolve_model

    source = resolve_model(name)
    if source.kind not in ("builtin", "gguf"):
        raise QuirkyError(
            f"{name!r} is a {source.kind} model; only GGUF models (e.g. smollm2) need preparing"
        )
    t = time.perf_counter()
    path = build_gguf_cache(source, force=force)
    console.print(f"{source.name}: cached at {path} ({time.perf_counter() - t:.1f} s)", highlight=False)


@app.command("show")
def show_cmd(name: str = typer.Argument(..., help="model string")) -> None:
    """Print what a model string resolves to (kind, path, identity used in fingerprints)."""
    from quirky.models.loading import resolve_model

    s = resolve_model(name)
    console.print(f"name {s.name}\nkind {s.kind}\npath {s.path}\nidentity {s.identity}", highlight=False)
