"""`quirky datasets list | build | show | import | export`: build the quirky datasets, look inside them, and
exchange them with the Hugging Face hub layout of the published `quirky_<name>_raw` datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from quirky.datasets.build import build_dataset, parse_option_value
from quirky.datasets.layout import SPLITS, load_split, read_meta
from quirky.datasets.registry import available_specs
from quirky.datasets.spec import DatasetSpec
from quirky.datasets.templating import setups_for, templatize
from quirky.errors import QuirkyError
from quirky.subsets import EASY, HARD

app = typer.Typer(
    help="Build and inspect the 12 quirky datasets.", no_args_is_help=True, add_completion=False
)
#: Wide tables stay readable when the output is piped (rich would otherwise assume 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)


@app.command("list")
def list_cmd() -> None:
    """Show every dataset, its Alice/Bob rules, default sizes (records) and what source it needs."""
    table = Table(
        title="quirky datasets (sizes are records: train / validation / test; train -1 = all the rest)"
    )
    for col in ("name", "Alice (truth)", "Bob (systematic error)", "difficulty", "sizes", "source"):
        table.add_column(col, overflow="fold")
    for name, spec in available_specs().items():
        if isinstance(spec, DatasetSpec):
            sizes = " / ".join(map(str, spec.default_sizes))
            table.add_row(name, spec.alice_rule, spec.bob_rule, spec.difficulty_rule, sizes, spec.source_help)
        else:
            table.add_row(name, "", "", "", "", f"[red]unavailable[/]: {spec}")
    console.print(table)


def _parse_options(items: list[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise QuirkyError(f"--option expects KEY=VALUE, got '{item}'.")
        options[key.strip()] = parse_option_value(value.strip())
    return options


@app.command("build")
def build_cmd(
    name: str = typer.Argument(..., help="dataset name (see `quirky datasets list`)"),
    out: Path = typer.Option(..., "--out", help="output directory (created atomically)"),
    seed: int = typer.Option(0, "--seed", help="random seed; the same seed gives byte-identical files"),
    n_train: int | None = typer.Option(None, "--n-train", help="train records (-1 = every question left)"),
    n_val: int | None = typer.Option(None, "--n-val", help="validation records"),
    n_test: int | None = typer.Option(None, "--n-test", help="test records"),
    source: Path | None = typer.Option(None, "--source", help="local source file (csv/jsonl/parquet)"),
    option: list[str] = typer.Option([], "--option", help="dataset option KEY=VALUE (repeatable)"),
) -> None:
    """Build dataset NAME into --out: train/validation/test parquet + dataset.json."""
    result = build_dataset(
        name,
        out,
        seed=seed,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        source=source,
        options=_parse_options(option),
    )
    state = "already up to date" if result.up_to_date else "built"
    sizes = ", ".join(f"{s} {n}" for s, n in result.meta["sizes"].items())
    console.print(
        f"{name}: {state} in {out} ({sizes}; fingerprint {result.meta['fingerprint']})", highlight=False
    )


@app.command("import")
def import_cmd(
    source: list[str] = typer.Argument(
        ...,
        help="hub id (EleutherAI/quirky_addition_raw), a snapshot/local directory, or train/validation/test parquet files",
    ),
    out: Path = typer.Option(..., "--out", help="output dataset directory (created atomically)"),
    name: str | None = typer.Option(
        None,
        "--name",
        help="dataset name (default: read from the id or path, e.g. quirky_addition_raw -> addition)",
    ),
) -> None:
    """Import a published quirky `_raw` dataset into --out, usable by every stage like a built one."""
    from quirky.datasets.hub_io import import_dataset

    result = import_dataset(source, out, name=name)
    sizes = ", ".join(f"{s} {n}" for s, n in result.meta["sizes"].items())
    computed = result.meta["imported"]["computed"]
    extra = f"; computed {', '.join(computed)}" if computed else ""
    console.print(
        f"{result.meta['name']}: imported into {out} ({sizes}{extra}; fingerprint {result.meta['fingerprint']})",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)


@app.command("export")
def export_cmd(
    dataset_dir: Path = typer.Argument(..., help="a quirky dataset directory (built or imported)"),
    out: Path = typer.Option(
        ..., "--out", help="output folder in the hub layout (data/*.parquet + README.md)"
    ),
    repo_id: str | None = typer.Option(
        None, "--repo-id", help="hub id to name in the dataset card's examples"
    ),
) -> None:
    """Export a dataset in the hub layout with a dataset card; `datasets.load_dataset(OUT)` reads its 3 splits."""
    from quirky.datasets.hub_io import export_dataset

    export_dataset(dataset_dir, out, repo_id=repo_id)
    console.print(f"exported {dataset_dir} to {out} (data/*.parquet + README.md)", highlight=False)


@app.command("show")
def show_cmd(
    dataset_dir: Path = typer.Argument(..., help="a directory written by `quirky datasets build`"),
    easy: float = typer.Option(EASY, help="difficulty quantile at or below which a record is easy"),
    hard: float = typer.Option(HARD, help="difficulty quantile at or above which a record is hard"),
    examples: int = typer.Option(3, help="rendered prompts per setup"),
) -> None:
    """Summarise a built dataset: sizes, Alice x Bob crosstab, easy/hard counts, rendered prompts per setup."""
    meta = read_meta(dataset_dir)
    name = str(meta["name"])
    splits = {s: load_split(dataset_dir, s) for s in SPLITS}
    console.print(
        f"[bold]{name}[/] seed={meta.get('seed')} options={meta.get('options')} fingerprint={meta.get('fingerprint')}",
        highlight=False,
    )

    table = Table(title="records per split (Alice x Bob counts are per question row, i.e. Alice records)")
    for col in (
        "split",
        "records",
        "Alice",
        "Bob",
        "A✓B✓",
        "A✓B✗",
        "A✗B✓",
        "A✗B✗",
        f"easy (q≤{easy})",
        f"hard (q≥{hard})",
    ):
        table.add_column(col, justify="right")
    for split, df in splits.items():
        alice = df[df["character"] == "Alice"]
        cross = pd.crosstab(alice["alice_label"], alice["bob_label"]).reindex(
            index=[True, False], columns=[True, False], fill_value=0
        )
        table.add_row(
            split,
            str(len(df)),
            str(int((df["character"] == "Alice").sum())),
            str(int((df["character"] == "Bob").sum())),
            *(
                str(int(cross.loc[a, b]))
                for a, b in ((True, True), (True, False), (False, True), (False, False))
            ),
            str(int((df["difficulty_quantile"] <= easy).sum())),
            str(int((df["difficulty_quantile"] >= hard).sum())),
        )
    console.print(table)

    sample_split = next((s for s in ("validation", "test", "train") if len(splits[s])), None)
    if sample_split is None:
        return
    sample = splits[sample_split].iloc[:examples]
    prompts = Table(title=f"rendered prompts ({sample_split}, first {len(sample)} records)", show_lines=True)
    for col in ("setup", "template", "character", "prompt", "target"):
        prompts.add_column(col, overflow="fold")
    for setup in setups_for(name):
        rendered = templatize(sample, name, setup=setup)
        if setup == "all":  # record i shown with template i, so the table stays short but shows variety
            n_templates = len(rendered) // max(len(sample), 1)
            rendered = rendered.iloc[[i * n_templates + i % n_templates for i in range(len(sample))]]
        for row in rendered.itertuples():
            prompts.add_row(
                setup, str(row.template), row.character, row.statement, repr(row.choices[row.label])
            )
    console.print(prompts)
