"""`quirky intervene`: reflect the last-token state across a probe direction at each layer and measure the LM."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from quirky.cli_options import (
    ActivationsOption,
    AdapterOption,
    BatchSizeOption,
    DatasetOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
)
from quirky.errors import QuirkyError

app = typer.Typer(
    help="Reflect the last prompt token's state across a probe's direction, layer by layer, and measure how the "
    "LM's answers change (AUROC against Alice's and Bob's labels).",
    no_args_is_help=True,
    add_completion=False,
    subcommand_metavar="",
)


_RANGE = re.compile(r"^(\d+)-(\d+)(?::(\d+))?$")


def parse_layers(text: str | None) -> list[int] | None:
    """`all` (or nothing) -> None; `0,4,8`; `-1` (the last); ranges `0-10` and strides `0-23:2` (inclusive)."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    layers: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _RANGE.match(part)
        if match:
            a, b, step = int(match[1]), int(match[2]), int(match[3] or 1)
            if b < a or step < 1:
                raise QuirkyError(f"--layers {text!r}: the range {part!r} is empty")
            layers.extend(range(a, b + 1, step))
        elif re.fullmatch(r"-?\d+", part):
            layers.append(int(part))
        else:
            raise QuirkyError(f"--layers {text!r}: expected e.g. 'all', '0,4,8', '-1', '0-11' or '0-23:2'")
    return layers


def _fmt(x: object) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


@app.callback(invoke_without_command=True, context_settings={"allow_interspersed_args": True})
def intervene(
    model: ModelOption[str],
    adapter: AdapterOption[Path | None] = None,
    probes: Path = typer.Option(..., "--probes", help="probe output directory (`quirky probe --out`)"),
    dataset: DatasetOption[Path] = ...,
    out: Path = typer.Option(..., "--out", help="output directory (interventions.json, log_odds.parquet)"),
    layers: str | None = typer.Option(None, "--layers", help="'all' (default), '0,4,8', '0-11' or '0-23:2'"),
    method: str = typer.Option("mean-diff", "--method", help="probe method: mean-diff, lr, lda, or random"),
    train_subset: str = typer.Option(
        "A", "--train-subset", help="training subset of the probe (A, B, AE, ...)"
    ),
    test_subset: str | None = typer.Option(
        None, "--test-subset", help="test examples: all, A, B, AE, AH, BE, BH (default: the probe's persona)"
    ),
    split: str = typer.Option("test", "--split", help="dataset split of the test examples"),
    setup: str | None = typer.Option(None, "--setup", help="template setup (default: the probe's)"),
    max_examples: int = typer.Option(300, "--max-examples", help="test examples (first N of the subset)"),
    batch_size: BatchSizeOption[int] = 16,
    last_layer: str = typer.Option(
        "post-norm", "--last-layer", help="hook the last layer after the final norm (post-norm) or before it"
    ),
    activations: ActivationsOption[Path | None] = None,
    seed: int = typer.Option(0, "--seed", help="template seed, and the random direction's seed"),
    device: DeviceOption[str | None] = None,
    dtype: DtypeOption[str | None] = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace results made with other settings"),
) -> None:
    """For each layer, reflect the last prompt token's state across the probe direction through the training mean
    (h' = h - 2((h-mu).u)u) and report the LM's AUROC against Alice's and Bob's labels, before and after."""
    from quirky.interventions.runner import run_intervention

    if last_layer not in ("post-norm", "pre-norm"):
        raise QuirkyError(f"--last-layer must be post-norm or pre-norm, got {last_layer!r}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    doc = run_intervention(
        model=model,
        adapter=adapter,
        probes=probes,
        dataset=dataset,
        out=out,
        method=method,
        train_subset=train_subset,
        test_subset=test_subset,
        layers=parse_layers(layers),
        split=split,
        setup=setup,
        max_examples=max_examples,
        batch_size=batch_size,
        last_layer=last_layer,  # type: ignore[arg-type]
        seed=seed,
        activations=activations,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
    )
    cfg = doc["config"]
    table = Table(
        title=f"{method} probe ({cfg['train_subset']}) reflected, {doc['n']} {cfg['test_subset']} examples: "
        f"clean AUROC vs Alice {_fmt(doc['clean']['auroc_alice'])}, vs Bob {_fmt(doc['clean']['auroc_bob'])}",
        header_style="bold",
    )
    for col in ("layer", "AUROC vs Alice", "AUROC vs Bob", "answers flipped", "mean Δ log-odds"):
        table.add_column(col, justify="right")
    for r in doc["layers"]:
        table.add_row(
            str(r["layer"]),
            _fmt(r["auroc_alice"]),
            _fmt(r["auroc_bob"]),
            _fmt(r["flip_rate"]),
            _fmt(r["mean_change"]),
        )
    Console().print(table)
