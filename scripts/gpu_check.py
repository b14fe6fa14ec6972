#!/usr/bin/env python
"""Prove the GPU paths on a GPU: finetuning, extraction and the probe grid on CUDA, timed next to the CPU.

On a CUDA machine (`--device auto` picks CUDA when present) the script runs the demo model (`smollm2`) through
  1. LoRA finetuning (base weights in bf16, the loader's CUDA default),
  2. full finetuning (fp32 master weights, bf16 autocast through accelerate's mixed precision),
  3. extraction of the validation and test splits with the LoRA model,
  4. the probe grid (`quirky probe`) on those stores,
  5. a batched == unbatched check: the hidden states of a few prompts in one padded batch (and one prefix-packed
     batch) against the same prompts one by one, within the tolerance of the model's dtype,
and then the same run on the CPU in a child process that cannot see the GPU (`CUDA_VISIBLE_DEVICES=""`, so every
stage takes exactly the CPU defaults a CPU-only machine takes).  It prints one table (throughput: finetuning
steps/s, extraction prompts/s, probe-grid seconds; the dtypes used; the checks) and writes it as JSON with `--out`.
Without a GPU it runs the CPU path only.  `--tiny` swaps the model for a tiny random Llama built in-process (the CI
test runs it that way in seconds).  Every stage goes through quirky's own API; nothing is reimplemented here.

    .venv/bin/python scripts/gpu_check.py --out gpu-check.json           # smollm2; CUDA + CPU when a GPU is present
    .venv/bin/python scripts/gpu_check.py --device cpu --tiny             # the CPU path on a tiny model (seconds)

Exit status: 0 when every check passed, 1 when one failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

#: Batched vs unbatched: the largest relative difference ||batched - alone|| / ||alone|| of one hidden state
#: allowed for a model of this dtype.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 5e-3}
#: The throughput keys every device's result holds.
THROUGHPUT_KEYS = (
    "finetune_lora_steps_per_s",
    "finetune_full_steps_per_s",
    "extract_prompts_per_s",
    "probe_grid_s",
)
SETUP = "grader-last"  # the demo's templating setup for addition (the cpu-smollm2 preset)
DATASET = "addition"
DATASET_OPTIONS = {"max_digits": 2}


# ------------------------------------------------------------------------------------------------ inputs
def save_tiny_model(path: Path, dataset: Path) -> Path:
    """A tiny random Llama with a byte-level BPE tokenizer trained on `dataset`'s prompts and answer choices
    (each answer word, with its leading space, then encodes as one token)."""
    from quirky.datasets import load_templated
    from quirky.models.tiny import tiny_model, tiny_tokenizer

    if (path / "config.json").is_file():
        return path
    texts: list[str] = []
    for split in ("train", "validation"):
        df = load_templated(dataset, split, setup=SETUP)
        texts += df["statement"].tolist()
        texts += [" ".join(choices) for choices in df["choices"]] * 4
    tok = tiny_tokenizer(texts, bos=True, vocab_size=320)  # small: numbers split unevenly
    model = tiny_model("llama", len(tok), layers=3, hidden=32, max_position_embeddings=256)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_data(work: Path, n_train: int, n_eval: int) -> Path:
    from quirky.datasets import build_dataset

    out = work / "data"
    build_dataset(DATASET, out, n_train=n_train, n_val=n_eval, n_test=n_eval, options=DATASET_OPTIONS)
    return out


# ------------------------------------------------------------------------------------------------ checks
def max_relative_error(batched: torch.Tensor, alone: torch.Tensor) -> float:
    """max over states of ||batched - alone|| / ||alone|| (states along the last axis)."""
    a, b = batched.float(), alone.float()
    rel = (a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-12)
    return float(rel.max())


def batched_check(model: Any, tokenizer: Any, df: Any, tol: float | None = None) -> dict[str, Any]:
    """The prompts of `df` through `forward_batch` in one padded batch (and one packed batch, where the model
    supports it) against each prompt alone; hidden states and contrast-pair states compared in relative norm."""
    from quirky.extraction import forward
    from quirky.extraction.extract import context_length, encode_frame

    enc = encode_frame(tokenizer, df, context_length(model, tokenizer), full=False, truncate=False)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    dtype = str(model.dtype).removeprefix("torch.")
    tol = tol if tol is not None else TOLERANCE.get(dtype, 2e-2)
    with torch.inference_mode():
        alone = [
            forward.forward_batch(model, [p], [c0], [c1], pad_id=pad_id, strategy="duplicate")
            for p, c0, c1 in zip(enc.prompts, enc.choice0, enc.choice1, strict=True)
        ]
        ref_h = torch.cat([r.hiddens for r in alone], dim=1)
        ref_p = torch.cat([r.pairs for r in alone], dim=1)
        ref_lo = torch.cat([r.lm_log_odds for r in alone])
        strategies = ["duplicate"]
        longest = max(len(p) + 2 for p in enc.prompts)
        if forward.packed_supported(model, longest):
            strategies.append("packed")
        results: dict[str, Any] = {}
        for strategy in strategies:
            res = forward.forward_batch(
                model, enc.prompts, enc.choice0, enc.choice1, pad_id=pad_id, strategy=strategy
            )
            h = max_relative_error(res.hiddens, ref_h)
            p = max_relative_error(res.pairs, ref_p)
            lo = float((res.lm_log_odds - ref_lo).abs().max())
            results[strategy] = {"hidden_rel": h, "pair_rel": p, "log_odds_abs": lo}
    worst = max(max(r["hidden_rel"], r["pair_rel"]) for r in results.values())
    lengths = [len(p) for p in enc.prompts]
    return {
        "prompts": len(enc.prompts),
        "prompt_tokens": [min(lengths), max(lengths)],
        "dtype": dtype,
        "tolerance": tol,
        "strategies": results,
        "max_rel": worst,
        "passed": bool(math.isfinite(worst) and worst <= tol),
    }


def check_prompts(dataset: Path, n: int) -> Any:
    """About `n` validation prompts of as many different lengths as possible (so that padding matters), as
    Alice/Bob pairs of the same question (so that the packed batch shares prefixes)."""
    from quirky.datasets import load_templated

    df = load_templated(dataset, "validation", setup=SETUP, max_examples=max(4 * n, 16))
    first = df.iloc[::2]  # rows come in Alice/Bob pairs of one record each
    order = first["statement"].str.len().sort_values(kind="stable").index
    k = max(n // 2, 1)
    starts = sorted({int(order[round(i * (len(order) - 1) / max(k - 1, 1))]) for i in range(k)})
    picks = [i for s in starts for i in (s, s + 1) if i < len(df)]
    return df.loc[picks].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ one device
def _finetune(
    model: str, data: Path, out: Path, args: argparse.Namespace, *, lora: bool, device: str
) -> dict[str, Any]:
    from quirky.finetune import finetune, preset_config
    from quirky.finetune import train as ft
    from quirky.models.loading import default_dtype

    settings: dict[str, Any] = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_eval_examples": 0,  # time the optimizer steps only
        "eval_every": 0,
        "save_every": args.steps + 1,
    }
    if lora:
        settings.update(lora_rank=8, lora_alpha=16.0, lr=1e-4)
    config = preset_config("cpu-smollm2", **settings)
    t0 = time.perf_counter()
    result = finetune(model, data, out, config, log=None)
    wall = time.perf_counter() - t0
    timing = json.loads((out / ft.TIMING_FILE).read_text())
    train_s = float(timing["train_seconds_this_invocation"])
    losses = [row["train_loss"] for row in result.history if row.get("train_loss") is not None]
    final_loss = float(losses[-1]) if losses else float("nan")
    return {
        "steps": result.total_steps,
        "train_s": train_s,
        "wall_s": wall,
        "steps_per_s": result.total_steps / train_s if train_s > 0 else float("nan"),
        # what finetune loads the weights in and whether accelerate autocasts (its own rules, read back)
        "weights_dtype": ft._load_dtype(config)
        or str(default_dtype(torch.device(device))).removeprefix("torch."),
        "mixed_precision": ft._mixed_precision(config),
        "final_train_loss": final_loss,
        "loss_finite": math.isfinite(final_loss),
    }


def run_device(device: str, model: str, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage on `device`, which must be this process's default device (finetuning has no device option:
    accelerate takes CUDA when it sees it)."""
    from quirky.datasets import load_templated, read_meta
    from quirky.experiments.evaluate import EvalSettings
    from quirky.experiments.transfer import TransferConfig, run_transfer
    from quirky.extraction.extract import ExtractSettings, extract_frame
    from quirky.models import load_model, model_identity
    from quirky.models.loading import default_device

    here = work / device
    if here.exists():  # its stages would be reused from the cache, and their timings would mean nothing
        raise SystemExit(
            f"gpu_check: {here} holds an earlier run; pass a new --work (or none: a temporary one)"
        )
    if torch.device(device).type != default_device().type:
        raise SystemExit(
            f"internal error: run_device({device!r}) in a process whose default is {default_device()}"
        )
    here.mkdir(parents=True)
    out: dict[str, Any] = {"device": device, "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)

    # 1-2. finetuning
    out["finetune_lora"] = _finetune(model, data, here / "lora", args, lora=True, device=device)
    out["finetune_full"] = _finetune(model, data, here / "full", args, lora=False, device=device)

    # 3. extraction with the LoRA model (merged into the loader's default dtype for this device)
    adapter = here / "lora"
    t0 = time.perf_counter()
    lm, tokenizer = load_model(model, adapter=adapter, device=device)
    out["model_load_s"] = time.perf_counter() - t0
    out["model_dtype"] = str(lm.dtype).removeprefix("torch.")
    meta = read_meta(data)
    rows, seconds = 0, 0.0
    for split in ("validation", "test"):
        df = load_templated(data, split, setup=SETUP)
        source = {
            "model": model_identity(model, adapter),
            "dataset": {"name": meta.get("name"), "fingerprint": meta.get("fingerprint")},
            "split": split,
            "setup": SETUP,
            "seed": 0,
            "max_examples": None,
        }
        settings = ExtractSettings(batch_size=args.extract_batch)
        t0 = time.perf_counter()
        extract_frame(
            lm, tokenizer, df, here / "activations" / split, source=source, settings=settings, progress=False
        )
        if device == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        rows += len(df)
    out["extract"] = {"prompts": rows, "seconds": seconds, "prompts_per_s": rows / seconds}

    # 5. batched == unbatched (before the probe grid, while the model is loaded)
    out["batched_check"] = batched_check(lm, tokenizer, check_prompts(data, args.check_prompts), args.tol)
    del lm
    if device == "cuda":
        torch.cuda.empty_cache()

    # 4. the probe grid
    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else TransferConfig().methods
    cfg = TransferConfig(methods=methods, eval=EvalSettings(n_boot=args.bootstrap), device=device)
    t0 = time.perf_counter()
    run_transfer(here / "activations", here / "probes", cfg)
    if device == "cuda":
        torch.cuda.synchronize()
    out["probe_grid"] = {"seconds": time.perf_counter() - t0, "methods": list(methods)}

    out["finetune_lora_steps_per_s"] = out["finetune_lora"]["steps_per_s"]
    out["finetune_full_steps_per_s"] = out["finetune_full"]["steps_per_s"]
    out["extract_prompts_per_s"] = out["extract"]["prompts_per_s"]
    out["probe_grid_s"] = out["probe_grid"]["seconds"]
    out["passed"] = bool(
        out["batched_check"]["passed"]
        and out["finetune_lora"]["loss_finite"]
        and out["finetune_full"]["loss_finite"]
    )
    return out


def run_cpu_child(args: argparse.Namespace, model: str, work: Path) -> dict[str, Any]:
    """The CPU run in a process that cannot see the GPU, so every stage takes its CPU defaults."""
    result = work / "cpu-result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--device", "cpu", "--no-cpu", "--no-table"]
    cmd += ["--model", model, "--work", str(work), "--out", str(result)]
    cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--n-train", str(args.n_train)]
    cmd += ["--prompts", str(args.prompts), "--extract-batch", str(args.extract_batch)]
    cmd += ["--check-prompts", str(args.check_prompts), "--bootstrap", str(args.bootstrap)]
    if args.methods:
        cmd += ["--methods", args.methods]
    if args.tol is not None:
        cmd += ["--tol", str(args.tol)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    result.unlink(missing_ok=True)  # never an earlier run's result
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, env=env, check=False)
    if not result.is_file():
        raise SystemExit(f"the CPU run failed (exit status {proc.returncode}); see its output above")
    return json.loads(result.read_text())["devices"]["cpu"]


# ------------------------------------------------------------------------------------------------ output
def speedups(cuda: dict[str, Any], cpu: dict[str, Any]) -> dict[str, float]:
    """How many times faster CUDA is, per throughput key (probe_grid_s is a time: cpu / cuda)."""
    return {k: (cuda[k] / cpu[k] if k.endswith("_per_s") else cpu[k] / cuda[k]) for k in THROUGHPUT_KEYS}


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def table_rows(devices: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    def get(d: dict[str, Any], *path: str) -> Any:
        for key in path:
            d = d.get(key, {}) if isinstance(d, dict) else {}
        return d if d != {} else "-"

    rows: list[tuple[str, tuple[str, ...], int]] = [
        ("LoRA finetuning, steps/s", ("finetune_lora_steps_per_s",), 2),
        ("  weights / autocast", ("finetune_lora", "weights_dtype"), 0),
        ("  final train loss", ("finetune_lora", "final_train_loss"), 3),
        ("full finetuning, steps/s", ("finetune_full_steps_per_s",), 2),
        ("  weights / autocast", ("finetune_full", "weights_dtype"), 0),
        ("  final train loss", ("finetune_full", "final_train_loss"), 3),
        ("extraction, prompts/s", ("extract_prompts_per_s",), 1),
        ("  model dtype", ("model_dtype",), 0),
        ("  model load, s", ("model_load_s",), 1),
        ("probe grid, s", ("probe_grid_s",), 1),
        ("batched vs alone, max rel. diff", ("batched_check", "max_rel"), 2),
        ("  tolerance", ("batched_check", "tolerance"), 2),
        ("checks", ("passed",), 0),
    ]
    out = []
    for label, path, digits in rows:
        cells = []
        for d in devices.values():
            v = get(d, *path)
            if path[-1] == "weights_dtype":
                v = f"{v} / {get(d, path[0], 'mixed_precision')}"
            if path == ("passed",):
                v = "pass" if v is True else "FAIL"
            cells.append(_fmt(v, digits) if isinstance(v, float) else str(v))
        out.append((label, cells))
    return out


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    devices = report["devices"]
    table = Table(title=f"quirky gpu-check: {report['model']}")
    table.add_column("")
    for name, d in devices.items():
        where = d.get("gpu") or f"{d.get('torch_threads')} torch threads"
        table.add_column(f"{name} ({where})", justify="right")
    if "speedup" in report:
        table.add_column("cuda / cpu", justify="right")
    speed_rows = {
        "LoRA finetuning, steps/s": "finetune_lora_steps_per_s",
        "full finetuning, steps/s": "finetune_full_steps_per_s",
        "extraction, prompts/s": "extract_prompts_per_s",
        "probe grid, s": "probe_grid_s",
    }
    for label, cells in table_rows(devices):
        if "speedup" in report:
            key = speed_rows.get(label)
            cells = [*cells, f"{report['speedup'][key]:.1f}x" if key else ""]
        table.add_row(label, *cells)
    Console().print(table)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--device", default="auto", choices=("auto", "cuda", "cpu"), help="auto: CUDA when present"
    )
    p.add_argument("--no-cpu", action="store_true", help="on a GPU, skip the CPU comparison run")
    p.add_argument("--model", default="smollm2", help="model name or path (default: the embedded smollm2)")
    p.add_argument(
        "--tiny", action="store_true", help="a tiny random Llama instead of --model (seconds, for CI)"
    )
    p.add_argument("--steps", type=int, default=None, help="finetuning steps per kind (default 20; --tiny 3)")
    p.add_argument("--batch-size", type=int, default=16, help="finetuning micro-batch")
    p.add_argument("--n-train", type=int, default=None, help="training records (default 1000; --tiny 200)")
    p.add_argument("--prompts", type=int, default=None, help="validation and test records each (default 400)")
    p.add_argument("--extract-batch", type=int, default=32)
    p.add_argument("--check-prompts", type=int, default=8, help="prompts of the batched == unbatched check")
    p.add_argument(
        "--tol", type=float, default=None, help="batched check tolerance (default: by model dtype)"
    )
    p.add_argument("--methods", default=None, help="probe methods, comma-separated (default: all)")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples of the probe grid")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--work", default=None, help="working directory (default: a new temporary one)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.steps = args.steps or (3 if args.tiny else 20)
    args.n_train = args.n_train or (200 if args.tiny else 1000)
    args.prompts = args.prompts or (120 if args.tiny else 400)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from quirky.progress import set_quiet

    set_quiet(True)  # no progress bars inside a table-printing check
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = "cuda" if args.device == "auto" and cuda else ("cpu" if args.device == "auto" else args.device)
    if device == "cuda" and not cuda:
        print(
            "gpu_check: --device cuda requested but CUDA is not available; use --device cpu or auto",
            file=sys.stderr,
        )
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="quirky-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    data = build_data(work, args.n_train, args.prompts)
    model = str(save_tiny_model(work / "tiny-llama", data)) if args.tiny else args.model

    devices: dict[str, dict[str, Any]] = {}
    if device == "cpu" and cuda:  # the CPU path must not see the GPU (accelerate and autocast would take it)
        devices["cpu"] = run_cpu_child(args, model, work)
    else:
        devices[device] = run_device(device, model, data, work, args)
        if device == "cuda" and not args.no_cpu:
            devices["cpu"] = run_cpu_child(args, model, work)

    report: dict[str, Any] = {
        "model": "tiny random llama" if args.tiny else args.model,
        "device_requested": args.device,
        "cuda_available": cuda,
        "devices": devices,
        "settings": {
            k: getattr(args, k)
            for k in (
                "steps",
                "batch_size",
                "n_train",
                "prompts",
                "extract_batch",
                "check_prompts",
                "bootstrap",
            )
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "work": str(work),
    }
    if "cuda" in devices and "cpu" in devices:
        report["speedup"] = speedups(devices["cuda"], devices["cpu"])
    report["passed"] = all(d["passed"] for d in devices.values())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    if not args.no_table:
        print_table(report)
        print("all checks passed" if report["passed"] else "A CHECK FAILED (see the table)")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
