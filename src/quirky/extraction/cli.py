"""`quirky extract --model M --dataset D --split S --out DIR` and `quirky extract info DIR`.

Typer note: the extraction itself is the group's callback (`invoke_without_command=True`), so both the plain
form and the `info` sub-command work; the callback's options are optional to Click and checked here instead, so
`quirky extract info DIR` does not demand `--model`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from quirky.cli_options import (
    AdapterOption,
    BatchSizeOption,
    DatasetOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    require_options,
)

app = typer.Typer(
    help="Extract hidden states, contrast pairs and LM log-odds of one dataset split into an activation store.",
    invoke_without_command=True,
    add_completion=False,
)
console = Console()


@app.callback()
def extract_cmd(
    ctx: typer.Context,
    model: ModelOption[str | None] = None,
    adapter: AdapterOption[Path | None] = None,
    dataset: DatasetOption[Path | None] = None,
    split: str = typer.Option("validation", "--split", help="train, validation or test"),
    out: Path | None = typer.Option(None, "--out", help="store directory to write"),
    setup: str = typer.Option(
        "single", "--setup", help="template setup (single, mixture, standardized, all, ...)"
    ),
    seed: int = typer.Option(0, "--seed", help="template seed (mixture/standardized setups)"),
    max_examples: int | None = typer.Option(
        None, "--max-examples", help="keep the first N records of the split"
    ),
    batch_size: BatchSizeOption[int] = 32,
    chunk_size: int = typer.Option(
        512, "--chunk-size", help="rows per on-disk chunk (the unit of resumption)"
    ),
    store_dtype: str = typer.Option("float16", "--store-dtype", help="float16, bfloat16 or float32 on disk"),
    full_log_odds: bool = typer.Option(False, "--full-log-odds", help="also store multi-token log-odds"),
    truncate: bool = typer.Option(False, "--truncate", help="keep the last tokens of over-long prompts"),
    device: DeviceOption[str | None] = None,
    dtype: DtypeOption[str | None] = None,
    device_map: str | None = typer.Option(
        None, "--device-map", help="`auto` to spread a big model over GPUs"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a different store at --out"),
) -> None:
    """Extract one split (one pass; the A/B/E/H subsets are masks over it). Resumes an interrupted run and
    reuses a finished store with the same fingerprint."""
    if ctx.invoked_subcommand is not None:
        return
    require_options("extract", {"--model": model, "--dataset": dataset, "--out": out})
    assert model is not None and dataset is not None and out is not None
    from quirky.extraction.extract import ExtractSettings, extract

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = ExtractSettings(
        batch_size=batch_size,
        chunk_size=chunk_size,
        storage_dtype=store_dtype,
        full_log_odds=full_log_odds,
        truncate=truncate,
    )
    store = extract(
        model,
        dataset,
        split,
        out,
        adapter=adapter,
        setup=setup,
        seed=seed,
        max_examples=max_examples,
        settings=settings,
        device=device,
        dtype=dtype,
        device_map=device_map,
        overwrite=overwrite,
    )
    console.print(
        f"store {store.path}: n={store.n}, layers={store.num_layers}, d={store.hidden_size}, "
        f"fingerprint {store.fingerprint}",
        highlight=False,
    )


@app.command("info")
def info_cmd(path: Path = typer.Argument(..., help="store directory")) -> None:
    """Shapes, subsets and their sizes, and the fingerprint of a store."""
    from quirky.extraction.store import open_store
    from quirky.subsets import EASY, HARD, SUBSETS

    store = open_store(path)
    src = store.config.get("source", {})
    console.print(f"[bold]{store.path}[/]  fingerprint [bold]{store.fingerprint}[/]", highlight=False)
    model = src.get("model", {})
    if isinstance(model, dict) and "model" in model:
        adapter = model.get("adapter")
        console.print(
            f"model {model['model'].get('name')} ({model['model'].get('identity')})"
            + (f", adapter {adapter.get('name')} ({adapter.get('identity')})" if adapter else ""),
            highlight=False,
        )
    if "dataset" in src:
        console.print(
            f"dataset {src['dataset'].get('name')} split {src.get('split')} setup {src.get('setup')}",
            highlight=False,
        )
    d, n, L = store.hidden_size, store.n, store.num_layers
    console.print(
        f"hiddens [{L}, {n}, {d}]  pairs [{L}, {n}, 2, {d}]  lm_log_odds [{n}]  "
        f"storage {store.storage_dtype}"
        + ("  + multi-token log-odds" if store.info.get("has_full_log_odds") else ""),
        highlight=False,
    )
    table = Table(title=f"subsets (easy: quantile <= {EASY}, hard: >= {HARD})")
    for col in ("subset", "rows", "label=1", "alice!=bob"):
        table.add_column(col, justify="right")
    disagree = (store.meta["alice_label"] != store.meta["bob_label"]).to_numpy()
    labels = store.meta["label"].to_numpy()
    for subset in SUBSETS:
        m = store.mask(subset)
        table.add_row(subset, str(int(m.sum())), str(int(labels[m].sum())), str(int(disagree[m].sum())))
    console.print(table)
