"""`quirky probe`: fit the probe zoo on activation stores, run the transfer grid; `quirky probe show DIR`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from quirky.errors import QuirkyError
from quirky.experiments.grid import split_tag
from quirky.probes import METHODS
from quirky.subsets import EASY, HARD, SUBSETS

app = typer.Typer(
    help="Fit probes (lr, lr-on-pair, mean-diff, mean-diff-on-pair, lda, ccs, crc, random) on activation stores "
    "and run the transfer experiments (EIL, PGR).",
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _split_list(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def print_summary(summary: dict[str, Any], out: Console | None = None) -> None:
    """A compact table: one row per probe (method, training set): EIL, in-distribution AUROC, AUROC against
    Alice's labels on each test subset at the EIL, and the PGR columns; then the LM row and the floor/ceiling."""
    con = out or console
    tests: list[str] = []
    for per_train in summary.get("eil", {}).values():
        for info in per_train.values():
            tests.extend(t for t in info["transfer"] if t not in tests)
    tests.sort(key=lambda t: SUBSETS.index(t) if t in SUBSETS else len(SUBSETS))
    pgr_tables = list(summary.get("pgr", {}))
    title = (
        f"{summary.get('model', '?')} / {summary.get('dataset', '?')} (L = {summary.get('num_layers', '?')}): "
        "AUROC vs Alice's labels at the EIL, all examples (ID: source subset vs the training labels)"
    )
    table = Table(title=title, show_lines=False, header_style="bold", pad_edge=False)
    for col in ("method", "train", "EIL", "ID", *tests, *(f"PGR {t}" for t in pgr_tables)):
        left = col in ("method", "train")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    eil = summary.get("eil", {})
    order = [m for m in METHODS if m in eil] + sorted(m for m in eil if m not in METHODS)
    for method in order:
        per_train = eil[method]
        tags = sorted(
            per_train,
            key=lambda tag: (SUBSETS.index(split_tag(tag)[0]) if split_tag(tag)[0] in SUBSETS else 99, tag),
        )
        for tag in tags:
            info = per_train[tag]
            cells = [method, tag, str(info["layer"]), _fmt(info["auroc"], 2)]
            for t in tests:
                cells.append(_fmt(info["transfer"].get(t, {}).get("all", {}).get("alice_label"), 2))
            for name in pgr_tables:
                rows = summary["pgr"][name]["methods"]
                key = method if tag == name.split("->")[0] else f"{method} ({tag})"
                cells.append(_fmt(rows.get(key, {}).get("pgr"), 2))
            table.add_row(*cells)
    lm = summary.get("lm", {})
    if lm:
        cells = ["LM", "-", "-", "-"] + [
            _fmt(lm.get(t, {}).get("all", {}).get("alice_label"), 2) for t in tests
        ]
        cells += ["" for _ in pgr_tables]
        table.add_row(*cells, style="dim")
    con.print(table)
    for name, info in summary.get("pgr", {}).items():
        avg = info.get("method_average", {})
        con.print(
            f"PGR {name}: floor {_fmt(info.get('floor'))} ({info.get('floor_experiment')}), ceiling "
            f"{_fmt(info.get('ceiling'))} ({info.get('ceiling_experiment')}); method average PGR "
            f"{_fmt(avg.get('pgr'), 2)}",
            highlight=False,
        )
    for tag, per_test in summary.get("random", {}).items():
        parts = ", ".join(
            f"{t}: {_fmt(v['mean_auroc'])} [{_fmt(v['q025'])}, {_fmt(v['q975'])}]"
            for t, v in per_test.items()
        )
        layer = next(iter(per_test.values()))["layer"] if per_test else "?"
        con.print(f"random directions ({tag}, layer {layer}, vs Alice): {parts}", highlight=False)
    for note in summary.get("notes", []):
        con.print(f"[yellow]note:[/] {note}", highlight=False)


@app.callback(invoke_without_command=True)
def probe(
    ctx: typer.Context,
    activations: Path | None = typer.Option(
        None,
        "--activations",
        "-a",
        help="directory holding one activation store per split (e.g. validation/, test/)",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="output directory (resumable)"),
    methods: list[str] = typer.Option(
        [], "--methods", "-m", help=f"comma-separated or repeated; default: all ({', '.join(METHODS)})"
    ),
    experiments: list[str] = typer.Option(
        [],
        "--experiments",
        "-e",
        help="TRAIN[@LABEL]->T1,T2 (repeat or separate with ';'); default: the reference grid per method",
    ),
    train_split: str = typer.Option("validation", help="split (sub-directory) the probes are fitted on"),
    test_split: str = typer.Option("test", help="split (sub-directory) the probes are evaluated on"),
    n_boot: int = typer.Option(1000, help="bootstrap resamples for the confidence intervals (0: none)"),
    seed: int = typer.Option(0, help="seed for bootstraps, CCS restarts, CRC and random directions"),
    fpr: float = typer.Option(0.05, help="false-positive rate at which recall is reported"),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto"),
    max_train: int | None = typer.Option(None, help="use at most this many rows of each training subset"),
    max_test: int | None = typer.Option(None, help="use at most this many rows of each test subset"),
    easy: float = typer.Option(EASY, help="difficulty quantile at or below which an example is easy"),
    hard: float = typer.Option(HARD, help="difficulty quantile at or above which an example is hard"),
    lr_l2: float = typer.Option(1e-3, help="L2 penalty of lr / lr-on-pair (mean BCE + l2 ||w||^2)"),
    lda_shrinkage: str | None = typer.Option(None, help="LDA covariance shrinkage in [0, 1] or 'auto'"),
    ccs_restarts: int = typer.Option(10, help="CCS restarts (the best loss is kept)"),
    random_directions: int = typer.Option(1000, help="directions drawn by the random baseline"),
    model_name: str | None = typer.Option(None, help="model name for the tables (default: from the store)"),
    dataset_name: str | None = typer.Option(
        None, help="dataset name for the tables (default: from the store)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines or bar"),
) -> None:
    """Fit every method on every layer for each experiment and score it; write results, probes and a summary."""
    if ctx.invoked_subcommand is not None:
        return
    if activations is None or out is None:
        raise QuirkyError(
            "quirky probe needs --activations DIR and --out DIR (or use `quirky probe show DIR`)"
        )
    if n_boot < 0:
        raise QuirkyError(f"--n-boot must be >= 0, got {n_boot}")
    if not 0.0 <= fpr < 1.0:
        raise QuirkyError(f"--fpr must be in [0, 1), got {fpr}")
    if ccs_restarts < 1 or random_directions < 1:
        raise QuirkyError("--ccs-restarts and --random-directions must be >= 1")
    shrink: float | str | None = lda_shrinkage
    if lda_shrinkage not in (None, "auto"):
        try:
            shrink = float(lda_shrinkage)
        except ValueError as e:
            raise QuirkyError(
                f"--lda-shrinkage must be a number in [0, 1] or 'auto', got {lda_shrinkage!r}"
            ) from e
    options: dict[str, dict[str, Any]] = {
        "lr": {"l2": lr_l2},
        "lr-on-pair": {"l2": lr_l2},
        "lda": {"shrinkage": shrink},
        "ccs": {"restarts": ccs_restarts, "seed": seed},
        "crc": {"seed": seed},
        "random": {"n_directions": random_directions, "seed": seed},
    }
    from quirky.experiments.evaluate import EvalSettings
    from quirky.experiments.transfer import TransferConfig, run_transfer

    cfg = TransferConfig(
        methods=tuple(_split_list(methods)) or METHODS,
        experiments=tuple(experiments) or None,
        train_split=train_split,
        test_split=test_split,
        probe_options=options,
        eval=EvalSettings(n_boot=n_boot, seed=seed, fpr=fpr),
        easy=easy,
        hard=hard,
        max_train=max_train,
        max_test=max_test,
        device=device,
        model_name=model_name,
        dataset_name=dataset_name,
    )
    from quirky.progress import set_quiet

    set_quiet(quiet)
    log = None if quiet else (lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))
    summary = run_transfer(activations, out, cfg, log=log)
    print_summary(summary)
    console.print(f"results in {out} (results.parquet, results.csv, summary.json)", highlight=False)


@app.command("show")
def show(directory: Path = typer.Argument(..., help="output directory of `quirky probe`")) -> None:
    """Print the summary of a finished `quirky probe` run as a compact table."""
    from quirky.experiments.probe_run import SUMMARY_JSON, ProbeRun

    run = ProbeRun(directory)
    if not (directory / SUMMARY_JSON).is_file():
        raise QuirkyError(
            f"{directory} holds no {SUMMARY_JSON}; run `quirky probe --activations ... --out {directory}`"
        )
    summary = run.summary
    if not isinstance(summary, dict) or not isinstance(summary.get("eil", {}), dict):
        raise QuirkyError(
            f"{directory / SUMMARY_JSON} is not a probe summary; rerun `quirky probe` with the same settings to "
            "rewrite it"
        )
    print_summary(summary)
