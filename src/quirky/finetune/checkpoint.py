"""Training checkpoints for resuming an interrupted run: trainable weights, optimizer, schedule, RNG, history.

Why only the trainable tensors: for LoRA on a 7B model they are a few MB while the base weights are 14 GB, and the
base is reloaded from its source anyway.  A checkpoint records the run's fingerprint, so a checkpoint of a
different run is never resumed.  Each checkpoint directory is written atomically and only the newest is kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from quirky.errors import QuirkyError
from quirky.fileio import atomic_dir, read_json
from quirky.finetune.output import CHECKPOINTS

WEIGHTS = "trainable.safetensors"
STATE = "state.pt"
META = "checkpoint.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: Path,
    *,
    step: int,
    fingerprint: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rng: dict[str, Any],
    history: list[dict[str, Any]],
    window: list[float],
) -> Path:
    """Write `out_dir/checkpoints/step-NNNNNNN` (state after `step` optimizer steps) and drop older ones."""
    root = out_dir / CHECKPOINTS
    target = root / f"step-{step:07d}"
    with atomic_dir(target) as tmp:
        save_file(trainable_state(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
                "step": step,
            },
            tmp / STATE,
        )
        (tmp / META).write_text(
            json.dumps(
                {"step": step, "fingerprint": fingerprint, "history": history, "loss_window": window},
                indent=2,
            )
            + "\n"
        )
    for old in root.glob("step-*"):
        if old != target and old.is_dir():
            shutil.rmtree(old)
    return target


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = out_dir / CHECKPOINTS
    done = sorted(p for p in root.glob("step-*") if (p / META).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def checkpoint_fingerprint(path: Path) -> str:
    return str(read_json(path / META).get("fingerprint", ""))


def load_checkpoint(
    path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[int, dict[str, Any], list[dict[str, Any]], list[float]]:
    """Restore weights/optimizer/scheduler in place; returns (step, rng state, metrics history, the training
    losses since the last evaluation)."""
    weights = load_file(str(path / WEIGHTS))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise QuirkyError(
            f"checkpoint {path} does not match the model ({len(missing)} trainable tensors missing, e.g. {missing[0]}); "
            "delete it or pass --overwrite"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    meta = read_json(path / META)
    return int(state["step"]), state["rng"], list(meta.get("history", [])), list(meta.get("loss_window", []))
