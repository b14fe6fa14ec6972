"""Quirky finetuning: LoRA (or full) training on the answer token, with evaluation, checkpoints and resume.

Why a small loop on `accelerate` instead of transformers' Trainer: the loss reads one logit row per example, the
evaluation needs per-persona AUROCs of the LM's log-odds, and resuming must reproduce the uninterrupted run's
weights exactly; all three are a few lines here and awkward through Trainer callbacks.  `accelerate` makes the same
code run on one CPU, one GPU, or many GPUs under `accelerate launch` / `torchrun` (DDP; gradients synchronised
only on the last micro-batch of each step).

A run directory holds, when complete: the adapter (`adapter_config.json`, `adapter_model.safetensors`; for full
finetuning a complete model directory), `finetune.json` (fingerprint and final metrics), `training_config.json`,
`metrics.json` / `metrics.csv` (the evaluation history), `timing.json` (wall-clock, the only non-deterministic
file) and, with `merge`, `merged/`.  While training it holds `run.json` (which run it is), the live metrics files
and `checkpoints/` (the newest one only).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import quirky
from quirky.errors import QuirkyError
from quirky.fileio import atomic_path, fingerprint, read_json, write_json
from quirky.finetune import schedule
from quirky.finetune.checkpoint import (
    CHECKPOINTS,
    checkpoint_fingerprint,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from quirky.finetune.config import FinetuneConfig
from quirky.finetune.data import (
    answer_loss,
    collate,
    encode_examples,
    last_token_logits,
    pad_id_of,
)
from quirky.finetune.evaluate import METRIC_KEYS, evaluate_examples, format_metrics
from quirky.finetune.lora import add_lora
from quirky.finetune.model_card import write_model_card
from quirky.finetune.output import (
    CONFIG_FILE,
    MERGED,
    METRICS_CSV,
    METRICS_JSON,
    RESULT_JSON,
    RUN_FILE,
    TIMING_FILE,
    FinetuneOutput,
)
from quirky.outdir import check_output, claim_output, hold_output, replace_output
from quirky.progress import Bar, around_bars
from quirky.subsets import select_mask

FORMAT_VERSION = 1
HISTORY_COLUMNS: tuple[str, ...] = ("step", "epoch", "lr", "train_loss", *METRIC_KEYS)


@dataclass
class FinetuneResult:
    """What a finished (or stopped) run produced."""

    out_dir: Path
    fingerprint: str
    status: str  # "complete" | "cached" | "stopped"
    step: int
    total_steps: int
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    main_process: bool = True  # False on the other ranks of a multi-process run (they hold no metrics)


# ------------------------------------------------------------------------------------------------ data
def select_examples(df: pd.DataFrame, config: FinetuneConfig) -> pd.DataFrame:
    """Filter a templated frame by persona and difficulty (the benchmark's cutoffs: `quirky.subsets`)."""
    character = None if config.characters == "both" else config.characters
    difficulty = config.difficulty if config.difficulty in ("easy", "hard") else None
    return df[select_mask(df, character, difficulty)].reset_index(drop=True)


def training_frame(dataset_dir: str | Path, config: FinetuneConfig) -> pd.DataFrame:
    """The train split, templated, filtered and balanced by undersampling (50/50 of the persona's label), so that
    always giving one answer scores no better than chance: only the persona's rule lowers the loss."""
    from quirky.datasets import balance, load_templated

    df = load_templated(dataset_dir, "train", setup=config.setup, seed=config.template_seed)
    df = select_examples(df, config)
    if config.max_train_examples is not None:
        df = df.iloc[: config.max_train_examples].reset_index(drop=True)
    what = (
        f"the train split of {dataset_dir} (characters={config.characters}, difficulty={config.difficulty})"
    )
    if len(df) == 0:
        raise QuirkyError(f"no training examples left in {what}; relax the persona/difficulty filters.")
    if df["label"].nunique() < 2:
        raise QuirkyError(
            f"{what} has a single class (every label is {bool(df['label'].iloc[0])}), so balancing leaves nothing "
            "to learn; use more examples or another persona/difficulty filter."
        )
    return balance(df, column="label", seed=config.seed)


def eval_frame(dataset_dir: str | Path, config: FinetuneConfig) -> pd.DataFrame:
    """The evaluation examples: both personas (to show quirkiness), unbalanced (AUROC does not need it), the first
    `max_eval_examples` records of the split (a random, persona-paired sample: splits are stored shuffled);
    none when `max_eval_examples` is 0."""
    from quirky.datasets import load_templated

    if config.max_eval_examples == 0:
        return pd.DataFrame()
    return load_templated(
        dataset_dir,
        config.eval_split,
        setup=config.setup,
        seed=config.template_seed,
        max_examples=config.max_eval_examples,
    )


# ------------------------------------------------------------------------------------------------ identity
def run_identity(model: str, dataset_dir: str | Path, config: FinetuneConfig) -> dict[str, Any]:
    """Everything that determines the trained weights: model and dataset content identities and the config."""
    from quirky.datasets import read_meta
    from quirky.models import model_identity

    meta = read_meta(dataset_dir)
    model_ident = model_identity(model)
    return {
        "format": FORMAT_VERSION,
        "model": model_ident["model"],
        # a LoRA repository given as the model (quirky.models.published) is its base plus that adapter
        **({"model_adapter": model_ident["adapter"]} if model_ident["adapter"] else {}),
        "dataset": {"name": meta.get("name"), "fingerprint": meta.get("fingerprint")},
        "config": config.result_fields(),
    }


def check_out_dir(out: Path, fp: str, overwrite: bool, inputs: tuple[str | Path | None, ...] = ()) -> str:
    """Decide what to do with an existing output directory: "fresh", "resume" or "cached".

    A directory that holds a different run (or something that is not a finetuning run) is an error unless
    `overwrite`, so a typo in --out never destroys an unrelated result.  The same run (same fingerprint) is
    reused or resumed even with `overwrite`: its result could only come out identical.  Anything that is not a
    finetuning run (or is an input, or the working directory) is refused even with `overwrite` (quirky.outdir).
    """
    if check_output(out, "finetune", inputs=inputs) in ("new", "empty"):
        return "fresh"
    owner = None
    for name in (RESULT_JSON, RUN_FILE):
        if (out / name).is_file():
            owner = read_json(out / name).get("fingerprint")
            break
    if owner is None:
        raise QuirkyError(
            f"output directory {out} is not empty and holds no finetuning run; choose an empty or new --out "
            "(nothing was changed)."
        )
    if owner != fp:
        if overwrite:
            claim_output(out, "finetune", inputs=inputs)  # the check again, under the lock: owned files only
            shutil.rmtree(out)
            return "fresh"
        raise QuirkyError(
            f"output directory {out} holds a different finetuning run (fingerprint {owner}, this run is {fp}); "
            "choose another --out, or pass --overwrite to replace it."
        )
    if (out / RESULT_JSON).is_file():
        return "cached"
    return "resume"


# ------------------------------------------------------------------------------------------------ outputs
def _clean(value: Any) -> Any:
    """JSON-safe numbers: NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.json and metrics.csv, each written atomically."""
    rows = [{k: _clean(r.get(k)) for k in HISTORY_COLUMNS} for r in history]
    write_json(out / METRICS_JSON, {"history": rows, "final": rows[-1] if rows else None})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(HISTORY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}
        )
    with atomic_path(out / METRICS_CSV) as tmp:
        tmp.write_text(buffer.getvalue())


def _save_model(model: Any, tokenizer: Any, target: Path, *, full: bool, model_name: str) -> None:
    if full:
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        return
    for cfg in model.peft_config.values():
        cfg.base_model_name_or_path = model_name  # portable: the name the user gave, not a cache path
    # The vocabulary is never resized here, so the base embeddings need not be saved; saying so stops peft from
    # looking the model name up on the hub to find out (a warning offline, e.g. for `smollm2`).
    model.save_pretrained(target, safe_serialization=True, save_embedding_layers=False)


# ------------------------------------------------------------------------------------------------ training
def _make_optimizer(params: list[torch.nn.Parameter], config: FinetuneConfig) -> torch.optim.Optimizer:
    betas = (config.adam_beta1, config.adam_beta2)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=betas, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.adam_beta1, weight_decay=config.weight_decay
        )
    from transformers.optimization import Adafactor

    return Adafactor(
        params, lr=config.lr, weight_decay=config.weight_decay, scale_parameter=False, relative_step=False
    )


def _load_dtype(config: FinetuneConfig) -> str | None:
    """Base weights: the loader's default (bf16 on GPU, fp32 on CPU) for LoRA; fp32 master weights for full
    finetuning (bf16 autocast on GPU through accelerate's mixed precision)."""
    if config.dtype != "auto":
        return config.dtype
    return "float32" if config.full else None


def _mixed_precision(config: FinetuneConfig) -> str:
    if (
        config.full
        and config.dtype == "auto"
        and torch.cuda.is_available()
        and torch.cuda.is_bf16_supported()
    ):
        return "bf16"
    return "no"


def _build_network(model: str, config: FinetuneConfig, device: torch.device) -> tuple[Any, Any]:
    """The trainable network (base + LoRA, or the base itself for full finetuning) in train mode, and the
    tokenizer.  Seeded right before the adapter is created, so LoRA's random init is part of the run's identity."""
    from quirky.models import load_model

    base, tokenizer = load_model(model, device=device, dtype=_load_dtype(config))
    torch.manual_seed(config.seed)
    if config.full:
        net = base
        for p in net.parameters():
            p.requires_grad_(True)
    else:
        net = add_lora(base, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets)
    if config.gradient_checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not config.full:
            net.enable_input_require_grads()
    net.train()
    return net, tokenizer


def finetune(
    model: str,
    dataset_dir: str | Path,
    out_dir: str | Path,
    config: FinetuneConfig,
    *,
    overwrite: bool = False,
    merge: bool = False,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = print,
) -> FinetuneResult:
    """Finetune `model` on the quirky dataset at `dataset_dir`, writing the run to `out_dir`.

    Resumes from the newest checkpoint of the same run; returns the stored result when the run is already
    complete.  `stop_after` ends this invocation after that many optimizer steps in total (leaving a checkpoint),
    for time-boxed chunks of a long run.  `log` receives the live progress lines on the main process.
    """
    from accelerate import Accelerator

    config = config.validate()
    out = Path(out_dir)
    identity = run_identity(model, dataset_dir, config)
    fp = fingerprint(identity)
    accelerator = Accelerator(mixed_precision=_mixed_precision(config))
    main = accelerator.is_main_process
    say: Callable[[str], None] = log if (log is not None and main) else (lambda _msg: None)

    state = _claim_out_dir(accelerator, out, fp, overwrite, (dataset_dir, model))
    if state == "cached":
        cached = load_result(out)
        cached.main_process = main
        return cached
    if main:
        hold_output(out, "finetune")  # released when the finished run is swapped in

    run = _prepare(model, dataset_dir, config, accelerator, out, fp, say)
    start = _resume(run, state, identity)
    run_info = _run_info(run, model, dataset_dir, identity)
    if start == 0:
        say(
            f"finetuning {model} ({run_info['kind']}, {run_info['trainable_parameters']:,} trainable parameters) on "
            f"{len(run.train_set)} balanced examples: {run.total} steps of {run.global_batch}, lr {config.lr:g}"
        )
    step, elapsed = _train(run, start, stop_after, f"finetune {Path(str(model)).name}")
    if step < run.total:  # stopped early on request
        run.say(f"stopped after step {step}/{run.total}; rerun to resume")
        return FinetuneResult(out, fp, "stopped", step, run.total, run.last_row, run.history, main)
    return _finish(run, model, run_info, start=start, elapsed=elapsed, merge=merge)


def _claim_out_dir(
    accelerator: Any, out: Path, fp: str, overwrite: bool, inputs: tuple[str | Path | None, ...]
) -> str:
    """`check_out_dir`'s verdict.  Only the main process judges (and may clear) `out`; the other ranks wait for it
    and then only ask whether the run is complete ("cached") or not ("run": they resume from whatever checkpoint
    the main process kept), so no two processes ever delete or write the same files."""
    main = accelerator.is_main_process
    state = check_out_dir(out, fp, overwrite, inputs) if main else "fresh"
    accelerator.wait_for_everyone()
    if not main:
        state = (
            "cached"
            if (out / RESULT_JSON).is_file() and read_json(out / RESULT_JSON).get("fingerprint") == fp
            else "run"
        )
    return state


@dataclass
class _Run:
    """One invocation's training state: what the loop, the evaluations and the checkpoints share."""

    accelerator: Any
    config: FinetuneConfig
    out: Path
    fp: str
    net: Any
    tokenizer: Any
    params: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    train_set: Any
    eval_set: Any
    pad_id: int
    global_batch: int
    total: int
    warmup: int
    evals: set[int]
    say: Callable[[str], None]
    history: list[dict[str, Any]] = field(default_factory=list)
    window: list[float] = field(default_factory=list)  # the step losses since the last evaluation

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def last_row(self) -> dict[str, Any]:
        """The newest evaluation row (the result's metrics), or {} before the first evaluation."""
        return self.history[-1] if self.history else {}

    def evaluate(self, step: int, train_loss: float) -> None:
        """Append a history row (the LM's metrics on the evaluation examples, computed on the main process only)
        and rewrite the live metrics files, so a long run can be watched and a killed one keeps its curve."""
        config = self.config
        row: dict[str, Any] = {
            "step": step,
            "epoch": step * self.global_batch / len(self.train_set),
            "lr": config.lr * schedule.lr_multiplier(step - 1, self.total, self.warmup, config.schedule)
            if step
            else 0.0,
            "train_loss": train_loss,
        }
        if self.main and self.eval_set is not None:
            metrics = evaluate_examples(
                self.accelerator.unwrap_model(self.net),
                self.eval_set,
                batch_size=config.eval_batch_size,
                pad_id=self.pad_id,
                device=self.accelerator.device,
            )
            row.update(metrics)
        self.history.append(row)
        if self.main:
            write_history(self.out, self.history)
            self.say(f"step {step:>5}/{self.total}  train loss {train_loss:.3f} | {format_metrics(row)}")
        self.accelerator.wait_for_everyone()

    def checkpoint(self, step: int, rng: dict[str, Any]) -> None:
        """Save the state after `step` with `rng`, the random state the next step starts from; the history and
        the loss window go in too, so the resumed run's metrics rows are the uninterrupted run's."""
        if self.main:
            rows = [{k: _clean(v) for k, v in r.items()} for r in self.history]
            save_checkpoint(
                self.out,
                step=step,
                fingerprint=self.fp,
                model=self.accelerator.unwrap_model(self.net),
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                rng=rng,
                history=rows,
                window=self.window,
            )
        self.accelerator.wait_for_everyone()


def _prepare(
    model: str,
    dataset_dir: str | Path,
    config: FinetuneConfig,
    accelerator: Any,
    out: Path,
    fp: str,
    say: Callable[[str], None],
) -> _Run:
    """Data, network, optimizer and learning-rate schedule, ready for the loop.  Steps are counted in global
    batches (micro-batch x accumulation x processes) and a step's examples depend only on its number
    (`schedule.batch_indices`), so a run is the same whichever way its global batch is split across devices."""
    train_df = training_frame(dataset_dir, config)
    eval_df = eval_frame(dataset_dir, config)

    net, tokenizer = _build_network(model, config, accelerator.device)
    train_set = encode_examples(tokenizer, train_df, config.max_length)
    eval_set = encode_examples(tokenizer, eval_df, config.max_length) if len(eval_df) else None
    pad_id = pad_id_of(tokenizer)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, config)

    global_batch = config.batch_size * config.grad_accum * accelerator.num_processes
    total = schedule.total_steps(len(train_set), global_batch, config.epochs, config.steps)
    warmup = schedule.warmup_steps(total, config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: schedule.lr_multiplier(s, total, warmup, config.schedule)
    )
    net, optimizer = accelerator.prepare(net, optimizer)
    evals = set(schedule.eval_steps(total, config.eval_every))
    return _Run(
        accelerator=accelerator,
        config=config,
        out=out,
        fp=fp,
        net=net,
        tokenizer=tokenizer,
        params=params,
        optimizer=optimizer,
        scheduler=scheduler,
        train_set=train_set,
        eval_set=eval_set,
        pad_id=pad_id,
        global_batch=global_batch,
        total=total,
        warmup=warmup,
        evals=evals,
        say=say,
    )


def _resume(run: _Run, state: str, identity: dict[str, Any]) -> int:
    """The step this invocation starts from.  The newest checkpoint of this run (the fingerprint must match)
    restores weights, optimizer, schedule, random state, history and loss window: the rest of the run is then the
    uninterrupted run's.  Without one, the main process starts over: it drops the checkpoints of a run it replaces
    and writes run.json, which marks the directory as this (unfinished) run for the next invocation."""
    checkpoint = latest_checkpoint(run.out) if state == "resume" or not run.main else None
    if checkpoint is not None and checkpoint_fingerprint(checkpoint) == run.fp:
        start, rng, run.history, run.window = load_checkpoint(
            checkpoint,
            model=run.accelerator.unwrap_model(run.net),
            optimizer=run.optimizer,
            scheduler=run.scheduler,
        )
        set_rng_state(rng)
        run.say(f"resuming {run.out} from step {start}/{run.total}")
        return start
    if run.main:
        if (run.out / CHECKPOINTS).exists():
            shutil.rmtree(run.out / CHECKPOINTS)
        write_json(run.out / RUN_FILE, {"fingerprint": run.fp, "identity": identity, "complete": False})
    return 0


def _run_info(run: _Run, model: str, dataset_dir: str | Path, identity: dict[str, Any]) -> dict[str, Any]:
    """training_config.json: the run's identity plus what it came to (example and step counts, parameters)."""
    config = run.config
    return {
        "fingerprint": run.fp,
        "identity": identity,
        "config": config.to_dict(),
        "model_name": model,
        "dataset_dir": str(Path(dataset_dir)),
        "kind": "full" if config.full else "lora",
        "n_train": len(run.train_set),
        "n_eval": len(run.eval_set) if run.eval_set is not None else 0,
        "truncated_train_prompts": run.train_set.truncated,
        "world_size": run.accelerator.num_processes,
        "global_batch": run.global_batch,
        "total_steps": run.total,
        "warmup_steps": run.warmup,
        "trainable_parameters": sum(p.numel() for p in run.params),
        "quirky_version": quirky.__version__,
    }


def _train(run: _Run, start: int, stop_after: int | None, label: str) -> tuple[int, float]:
    """Optimizer steps from `start` to the end (or to `stop_after`): `(last step, seconds)`.

    Evaluates at the scheduled steps and checkpoints every `save_every` steps.  An interrupt (Ctrl-C) between
    two updates, and a stop on request, leave a checkpoint of the last finished step, so rerunning the command
    resumes there; an interrupt inside an update saves nothing (the weights would be half-updated).
    """
    t0 = time.perf_counter()
    step = start
    last_saved = start
    in_update = False
    step_rng = rng_state()
    # a progress line with ETA on a terminal (main process only); silent in logs and under --quiet
    bar = Bar(run.total, label, unit="step", initial=start, quiet=not run.main)
    run.say = around_bars(run.say)
    try:
        while step < run.total and (stop_after is None or step < stop_after):
            step_loss = _accumulate_gradients(run, step)
            in_update = True
            if run.config.max_grad_norm > 0:
                run.accelerator.clip_grad_norm_(run.params, run.config.max_grad_norm)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            step += 1
            in_update = False
            step_rng = rng_state()  # the state a resumed run starts the next step with
            step_loss = _mean_over_processes(run, step_loss)
            run.window.append(step_loss)
            bar.update(1)
            bar.note(f"loss {step_loss:.3f}")
            if step in run.evals:
                run.evaluate(step, float(np.mean(run.window)))
                run.window = []
            if step % run.config.save_every == 0 and step < run.total:
                run.checkpoint(step, step_rng)
                last_saved = step
    except KeyboardInterrupt:
        if not in_update and step > last_saved:
            run.checkpoint(step, step_rng)
            run.say(f"interrupted: checkpoint at step {step}; rerun the same command to resume")
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    if step < run.total and step > last_saved:  # stopped early on request
        run.checkpoint(step, step_rng)
    return step, elapsed


def _accumulate_gradients(run: _Run, step: int) -> float:
    """Forward and backward passes over this process's micro-batches of `step`: the step's loss on this process.
    Its examples come from the step number alone, optionally stratified so every batch is half positive;
    gradients are synchronised across processes only on the last micro-batch (one all-reduce per step)."""
    config, accelerator = run.config, run.accelerator
    labels = run.train_set.label if config.stratify else None
    indices = schedule.batch_indices(step, run.global_batch, len(run.train_set), config.seed, labels)
    micro = schedule.rank_micro_batches(
        indices, config.batch_size, config.grad_accum, accelerator.process_index
    )
    step_loss = 0.0
    for k, idx in enumerate(micro):
        batch = collate(run.train_set, idx, run.pad_id).to(accelerator.device)
        sync = k == len(micro) - 1
        ctx = contextlib.nullcontext() if sync else accelerator.no_sync(run.net)
        with ctx:
            loss = answer_loss(last_token_logits(run.net, batch), batch) / config.grad_accum
            accelerator.backward(loss)
        step_loss += float(loss.detach())
    return step_loss


def _mean_over_processes(run: _Run, step_loss: float) -> float:
    """The step's loss averaged over processes, so every rank logs and checkpoints the same number."""
    if run.accelerator.num_processes > 1:
        device = run.accelerator.device
        return float(run.accelerator.reduce(torch.tensor(step_loss, device=device), "mean"))
    return step_loss


def _finish(
    run: _Run, model: str, run_info: dict[str, Any], *, start: int, elapsed: float, merge: bool
) -> FinetuneResult:
    """Write the finished run (main process) and return its result on every process."""
    main = run.main
    final = run.last_row
    if main:
        _write_final(
            run.out,
            run.accelerator.unwrap_model(run.net),
            run.tokenizer,
            config=run.config,
            model_name=model,
            run_info=run_info,
            history=run.history,
            timing={"train_seconds_this_invocation": elapsed, "resumed_from_step": start},
            merge=merge,
        )
        run.say(f"done in {elapsed:.0f} s: {run.out}")
    run.accelerator.wait_for_everyone()
    return FinetuneResult(run.out, run.fp, "complete", run.total, run.total, final, run.history, main)


def _write_final(
    out: Path,
    net: Any,
    tokenizer: Any,
    *,
    config: FinetuneConfig,
    model_name: str,
    run_info: dict[str, Any],
    history: list[dict[str, Any]],
    timing: dict[str, Any],
    merge: bool,
) -> None:
    """Replace the run directory (checkpoints and all) by the finished run, atomically: a crash here leaves the
    last checkpoint, never a half-written result."""
    final = history[-1] if history else {}
    merged = bool(merge and not config.full)
    with replace_output(out, "finetune") as tmp:
        _save_model(net, tokenizer, tmp, full=config.full, model_name=model_name)
        write_history(tmp, history)
        write_json(tmp / CONFIG_FILE, run_info)
        write_json(tmp / TIMING_FILE, timing)
        if merged:
            plain = net.merge_and_unload()
            plain.save_pretrained(tmp / MERGED, safe_serialization=True)
            tokenizer.save_pretrained(tmp / MERGED)
        write_json(
            tmp / RESULT_JSON,
            {
                "fingerprint": run_info["fingerprint"],
                "complete": True,
                "kind": run_info["kind"],
                "model_name": model_name,
                "identity": run_info["identity"],
                "total_steps": run_info["total_steps"],
                "final": {k: _clean(v) for k, v in final.items()},
                "merged": merged,
                "quirky_version": quirky.__version__,
            },
        )
        write_model_card(tmp, run_info, history, merged=merged)  # README.md: the hub's model-card format


def load_result(out_dir: str | Path) -> FinetuneResult:
    """The stored result of a complete run."""
    out = Path(out_dir)
    if not FinetuneOutput.exists(out):
        raise QuirkyError(
            f"{out} holds no complete finetuning run (no {RESULT_JSON}); run `quirky finetune` first."
        )
    done = FinetuneOutput.open(out)
    total = int(done.doc.get("total_steps", 0))
    return FinetuneResult(
        out, str(done.doc["fingerprint"]), "cached", total, total, done.doc.get("final", {}), done.history
    )
