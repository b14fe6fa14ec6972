"""`quirky finetune ...` (train) and `quirky finetune eval ...` (evaluate a model or adapter on any split).

Why a callback plus a sub-command: `quirky finetune --model M --dataset D --out O` is the common case and should
not need a verb, while evaluation is a separate action.  Typer runs the group callback before any sub-command, so
the callback's options are all optional and it trains only when no sub-command follows.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from quirky.cli_options import DatasetOption, QuietOption, require_options
from quirky.errors import QuirkyError
from quirky.fileio import write_json
from quirky.finetune.config import PRESETS, preset_config

if TYPE_CHECKING:
    from quirky.finetune.train import FinetuneResult

app = typer.Typer(
    help="Make a model quirky: LoRA or full finetuning on a quirky dataset (and evaluate it).",
    invoke_without_command=True,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def _targets(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(t.strip() for t in value.split(",") if t.strip())
    if not names:
        raise QuirkyError("--lora-targets needs at least one module name, e.g. q_proj,v_proj")
    return names


@app.callback()
def finetune_cmd(
    ctx: typer.Context,
    model: str | None = typer.Option(
        None, "--model", help="model: `smollm2`, a directory, a .gguf file or a hub id"
    ),
    dataset: DatasetOption[Path | None] = None,
    out: Path | None = typer.Option(None, "--out", help="run directory (adapter, metrics, checkpoints)"),
    preset: str | None = typer.Option(None, "--preset", help=f"named recipe: {', '.join(PRESETS)}"),
    setup: str | None = typer.Option(
        None, "--setup", help="single | mixture | standardized | grader-first | grader-last"
    ),
    characters: str | None = typer.Option(None, "--characters", help="both | Alice | Bob"),
    difficulty: str | None = typer.Option(None, "--difficulty", help="none | easy | hard"),
    lora_rank: int | None = typer.Option(None, "--lora-rank", help="LoRA rank (reference 8)"),
    lora_alpha: float | None = typer.Option(None, "--lora-alpha", help="LoRA alpha (reference 8)"),
    lora_dropout: float | None = typer.Option(None, "--lora-dropout"),
    lora_targets: str | None = typer.Option(None, "--lora-targets", help="comma-separated module names"),
    full: bool = typer.Option(False, "--full", help="full finetuning instead of LoRA"),
    steps: int | None = typer.Option(None, "--steps", help="optimizer steps (overrides --epochs)"),
    epochs: float | None = typer.Option(None, "--epochs"),
    lr: float | None = typer.Option(None, "--lr", help="peak learning rate"),
    warmup_ratio: float | None = typer.Option(None, "--warmup-ratio"),
    lr_schedule: str | None = typer.Option(None, "--schedule", help="linear | cosine | constant"),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adamw | adam | sgd | adafactor"),
    weight_decay: float | None = typer.Option(None, "--weight-decay"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="per-device micro-batch"),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="micro-batches per optimizer step"),
    max_length: int | None = typer.Option(None, "--max-length", help="max tokens (prompt + answer)"),
    seed: int | None = typer.Option(None, "--seed"),
    stratify: bool | None = typer.Option(
        None,
        "--stratify/--no-stratify",
        help="every batch exactly half positive (default: off; preset may set it)",
    ),
    max_train_examples: int | None = typer.Option(None, "--max-train-examples"),
    max_eval_examples: int | None = typer.Option(None, "--max-eval-examples"),
    eval_every: int | None = typer.Option(None, "--eval-every", help="extra evaluations every N steps"),
    save_every: int | None = typer.Option(None, "--save-every", help="checkpoint every N steps"),
    dtype: str | None = typer.Option(None, "--dtype", help="auto | float32 | bfloat16 | float16"),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    merge: bool = typer.Option(False, "--merge", help="also write merged weights to OUT/merged"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a different run in --out"),
    stop_after: int | None = typer.Option(None, "--stop-after", help="stop after N steps (resume later)"),
    quiet: QuietOption[bool] = False,
) -> None:
    """Finetune MODEL on a quirky dataset (LoRA by default); rerun the same command to resume."""
    if ctx.invoked_subcommand is not None:
        return
    require_options("finetune", {"--model": model, "--dataset": dataset, "--out": out})
    assert model is not None and dataset is not None and out is not None
    from quirky.finetune.train import finetune
    from quirky.progress import set_quiet

    set_quiet(quiet)
    config = preset_config(
        preset,
        setup=setup,
        characters=characters,
        difficulty=difficulty,
        lora_rank=0 if full else lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=_targets(lora_targets),
        steps=steps,
        epochs=epochs,
        lr=lr,
        warmup_ratio=warmup_ratio,
        schedule=lr_schedule,
        optimizer=optimizer,
        weight_decay=weight_decay,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        seed=seed,
        stratify=stratify,
        max_train_examples=max_train_examples,
        max_eval_examples=max_eval_examples,
        eval_every=eval_every,
        save_every=save_every,
        dtype=dtype,
        gradient_checkpointing=gradient_checkpointing or None,
    )
    result = finetune(
        model,
        dataset,
        out,
        config,
        overwrite=overwrite,
        merge=merge,
        stop_after=stop_after,
        log=console.print,
    )
    _print_result(result, out)


def _print_result(result: FinetuneResult, out: Path) -> None:
    """The final metrics as one JSON line (for scripts), on the main process only, so a multi-GPU run prints
    them once."""
    if not result.main_process:
        return
    if result.status == "cached":
        console.print(f"{out}: already complete (fingerprint {result.fingerprint})")
    if result.metrics:
        console.print(json.dumps({k: _num(v) for k, v in result.metrics.items()}, sort_keys=True))


def _num(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", help="base model (as given to `quirky finetune`)"),
    dataset: Path = typer.Option(..., "--dataset", help="dataset directory"),
    adapter: Path | None = typer.Option(
        None, "--adapter", help="a run directory or adapter (omit: the base model)"
    ),
    split: str = typer.Option("test", "--split", help="train | validation | test"),
    setup: str | None = typer.Option(
        None, "--setup", help="default: the adapter's training setup, else single"
    ),
    max_examples: int | None = typer.Option(None, "--max-examples", help="first N records of the split"),
    batch_size: int = typer.Option(64, "--batch-size"),
    out: Path | None = typer.Option(None, "--out", help="also write the metrics to this JSON file"),
) -> None:
    """Loss, and Alice's and Bob's accuracy and AUROC of the LM's log-odds, on a split."""
    from quirky.finetune.evaluate import evaluate_model, format_metrics

    metrics = evaluate_model(
        model,
        dataset,
        adapter=adapter,
        split=split,
        setup=setup,
        max_examples=max_examples,
        batch_size=batch_size,
    )
    console.print(f"{split} ({metrics['setup']}, {metrics['n']} examples): {format_metrics(metrics)}")
    clean = {k: _num(v) for k, v in metrics.items()}
    if out is not None:
        write_json(out, clean)
    console.print(json.dumps(clean, sort_keys=True))
