"""`quirky intervene`: load the model, the probe and the test prompts, run the experiment, write the results.

Resumable: examples are processed in chunks whose results are saved (atomically) in a scratch directory beside
the output, keyed by the experiment's fingerprint; a rerun with the same settings skips finished chunks, and a
finished output with the same fingerprint is returned as is.  The output directory appears only when complete.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

import quirky
from quirky.errors import QuirkyError
from quirky.experiments.grid import split_tag
from quirky.fileio import atomic_path, fingerprint, read_json, write_json
from quirky.interventions.experiment import (
    encode_prompts,
    intervened_log_odds,
    select_examples,
    summarize,
)
from quirky.interventions.output import LOG_ODDS, RESULT_JSON
from quirky.interventions.probe_source import ProbeDirection, load_probe_direction
from quirky.interventions.reflect import LastLayerSite, num_layers
from quirky.outdir import check_output, discard_scratch, hold_output, replace_output, scratch_path

log = logging.getLogger(__name__)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def resolve_layers(layers: Sequence[int] | None, total: int) -> list[int]:
    """Layer indices (negative ones count from the end), sorted, unique; all layers by default."""
    if layers is None or len(layers) == 0:
        return list(range(total))
    out = set()
    for layer in layers:
        if not -total <= int(layer) < total:
            raise QuirkyError(f"layer {layer} is out of range: the probe has {total} layers (0..{total - 1})")
        out.add(int(layer) % total)
    return sorted(out)


def scratch_dir(out: Path) -> Path:
    """The scratch directory of an unfinished intervention run into `out` (`outdir.scratch_path`)."""
    return scratch_path(out)


def run_intervention(
    *,
    model: str,
    probes: str | Path,
    dataset: str | Path,
    out: str | Path,
    adapter: str | Path | None = None,
    method: str = "mean-diff",
    train_subset: str = "A",
    test_subset: str | None = None,
    layers: Sequence[int] | None = None,
    split: str = "test",
    setup: str | None = None,
    max_examples: int | None = 300,
    batch_size: int = 16,
    chunk_size: int = 64,
    last_layer: LastLayerSite = "post-norm",
    seed: int = 0,
    activations: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    loaded: tuple[Any, Any] | Callable[[], tuple[Any, Any]] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the intervention experiment and write `out/interventions.json` and `out/log_odds.parquet`.

    `test_subset` defaults to the training subset's persona (A for A/AE/AH, B for B/BE/BH), as in the reference's
    A->A and B->B runs.  `loaded=(model, tokenizer)` skips loading (tests, or a caller that holds the model); a
    zero-argument callable returning that pair is called only if the results are not already up to date.
    """
    from quirky.datasets import load_templated

    out = Path(out)
    inputs = [probes, dataset, adapter, activations, model]
    check_output(out, "intervene", inputs=inputs)  # refuse before any work, never after
    probe = load_probe_direction(probes, method, train_subset, seed=seed, activations=activations)
    chosen = resolve_layers(layers, probe.num_layers)
    test_subset = test_subset or _persona(train_subset)
    setup = setup or probe.setup or "single"
    df = select_examples(load_templated(dataset, split, setup=setup, seed=seed), test_subset, max_examples)
    config = _experiment_config(
        model=model,
        adapter=adapter,
        held=loaded is not None,
        dataset=dataset,
        split=split,
        setup=setup,
        seed=seed,
        probe=probe,
        method=method,
        train_subset=train_subset,
        test_subset=test_subset,
        max_examples=max_examples,
        examples=df,
        layers=chosen,
        last_layer=last_layer,
    )
    fp = fingerprint(config)
    finished = _finished_result(out, fp, overwrite)
    if finished is not None:
        return finished

    lm, tokenizer = _model_for(probe, model, adapter, device=device, dtype=dtype, loaded=loaded)
    prompt_ids, answer_ids = encode_prompts(tokenizer, df["statement"].tolist(), df["choices"].tolist())
    scratch = _claim_scratch(out, fp)
    clean, hooked = _log_odds_by_chunk(
        lm,
        prompt_ids,
        answer_ids,
        directions=probe.direction[chosen],
        means=probe.mean[chosen],
        layers=chosen,
        scratch=scratch,
        pad_id=_pad_id(tokenizer),
        batch_size=batch_size,
        chunk_size=chunk_size,
        last_layer=last_layer,
        progress=progress,
    )
    _write_output(out, inputs, config, fp, df, clean, hooked, chosen)
    shutil.rmtree(scratch, ignore_errors=True)
    return read_json(out / RESULT_JSON)


def _persona(train_subset: str) -> str:
    """The test subset by default: the persona of the probe's training subset (`A` for A/AE/AH), so a probe is
    tested on the labels it learnt, as in the reference's A->A and B->B runs; `all` stays `all`."""
    base = split_tag(train_subset)[0]
    return "all" if base == "all" else base[0]


def _model_identity(model: str, adapter: str | Path | None, *, held: bool) -> dict[str, Any]:
    """The model's identity for the fingerprint.  A caller-held model whose name resolves to nothing on disk is
    identified by its names only (there is nothing else to hash); a model we are to load must resolve."""
    from quirky.models import model_identity

    try:
        return model_identity(model, adapter)
    except QuirkyError:
        if not held:
            raise
        return {"model": {"name": str(model)}, "adapter": None if adapter is None else str(adapter)}


def _experiment_config(
    *,
    model: str,
    adapter: str | Path | None,
    held: bool,
    dataset: str | Path,
    split: str,
    setup: str,
    seed: int,
    probe: ProbeDirection,
    method: str,
    train_subset: str,
    test_subset: str,
    max_examples: int | None,
    examples: pd.DataFrame,
    layers: list[int],
    last_layer: LastLayerSite,
) -> dict[str, Any]:
    """Everything the results depend on, recorded in `interventions.json` and hashed into the fingerprint that
    decides whether a finished output (or a scratch chunk) can be reused.  The examples enter by their ids'
    digest, so a changed dataset or selection is noticed without hashing the prompts."""
    from quirky.datasets import read_meta

    return {
        "kind": "quirky-intervention",
        "model": _model_identity(model, adapter, held=held),
        "dataset": {
            "name": read_meta(dataset).get("name"),
            "fingerprint": read_meta(dataset).get("fingerprint"),
        },
        "split": split,
        "setup": setup,
        "seed": seed,
        "probe": probe.describe(),
        "method": method,
        "train_subset": train_subset,
        "test_subset": test_subset,
        "max_examples": max_examples,
        "n": len(examples),
        "layers": layers,
        "num_layers": probe.num_layers,
        "last_layer": last_layer,
        "ids_digest": fingerprint(examples["id"].tolist()),
    }


def _finished_result(out: Path, fp: str, overwrite: bool) -> dict[str, Any] | None:
    """The finished results in `out` if they were made with these settings (rerunning is free), else None.
    Results for other settings are an error unless `overwrite`: they may be someone's finished experiment."""
    result_file = out / RESULT_JSON
    if not result_file.is_file():
        return None
    existing = read_json(result_file)
    if existing.get("fingerprint") == fp:
        log.info("intervention results at %s are up to date (fingerprint %s)", out, fp)
        return existing
    if not overwrite:
        raise QuirkyError(
            f"{out} holds intervention results for different settings (fingerprint {existing.get('fingerprint')} "
            f"!= {fp}); choose another --out or pass --overwrite"
        )
    return None


def _model_for(
    probe: ProbeDirection,
    model: str,
    adapter: str | Path | None,
    *,
    device: str | None,
    dtype: str | None,
    loaded: tuple[Any, Any] | Callable[[], tuple[Any, Any]] | None,
) -> tuple[Any, Any]:
    """The model and tokenizer (loaded only now, once we know there is work to do), checked to have the probe's
    layer count: a probe fitted on another model would be reflected at meaningless layers."""
    if loaded is None:
        from quirky.models import load_model

        lm, tokenizer = load_model(model, adapter=adapter, device=device, dtype=dtype)
    else:
        lm, tokenizer = loaded() if callable(loaded) else loaded
    total = probe.num_layers
    if num_layers(lm) != total:
        raise QuirkyError(
            f"the probe has {total} layers but the model has {num_layers(lm)}: the probes were fitted on another model"
        )
    return lm, tokenizer


def _claim_scratch(out: Path, fp: str) -> Path:
    """Lock `out` and return its scratch directory, keeping the chunks of an interrupted run with the same
    fingerprint and discarding those of other settings (they would mix two experiments' numbers)."""
    hold_output(out, "intervene")  # the scratch directory is shared by writers of `out`
    scratch = scratch_dir(out)
    state_file = scratch / "state.json"
    if scratch.exists() and not (state_file.is_file() and read_json(state_file).get("fingerprint") == fp):
        discard_scratch(scratch, state_file.name)
    scratch.mkdir(parents=True, exist_ok=True)
    write_json(state_file, {"fingerprint": fp})
    return scratch


def _log_odds_by_chunk(
    lm: Any,
    prompt_ids: Any,
    answer_ids: Any,
    *,
    directions: torch.Tensor,
    means: torch.Tensor,
    layers: list[int],
    scratch: Path,
    pad_id: int,
    batch_size: int,
    chunk_size: int,
    last_layer: LastLayerSite,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean log-odds of every example (n) and its log-odds with the reflection at each layer (layers x n).

    Computed `chunk_size` examples at a time, each chunk saved atomically in `scratch` as soon as it is done, so
    an interrupted run loses at most one chunk and a rerun reads the finished ones back instead of recomputing."""
    n = len(prompt_ids)
    clean = torch.empty(n)
    hooked = torch.empty((len(layers), n))
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        chunk_file = scratch / f"chunk-{start:07d}-{stop:07d}.safetensors"
        if chunk_file.is_file():
            saved = load_file(str(chunk_file))
            clean[start:stop], hooked[:, start:stop] = saved["clean"], saved["hooked"]
            continue
        c, h = intervened_log_odds(
            lm,
            prompt_ids[start:stop],
            answer_ids[start:stop],
            layers=layers,
            directions=directions,
            means=means,
            pad_id=pad_id,
            batch_size=batch_size,
            last_layer=last_layer,
        )
        clean[start:stop], hooked[:, start:stop] = c, h
        with atomic_path(chunk_file) as tmp:
            save_file({"clean": c.contiguous(), "hooked": h.contiguous()}, str(tmp))
        if progress:
            log.info("intervened on %d/%d examples x %d layers", stop, n, len(layers))
    return clean, hooked


def _write_output(
    out: Path,
    inputs: list[Any],
    config: dict[str, Any],
    fp: str,
    df: pd.DataFrame,
    clean: torch.Tensor,
    hooked: torch.Tensor,
    layers: list[int],
) -> None:
    """Write the AUROC summary (`interventions.json`) and every example's log-odds (`log_odds.parquet`, one
    column per layer) together, so `out` appears only when both are complete."""
    alice = df["alice_label"].to_numpy()
    bob = df["bob_label"].to_numpy()
    summary = summarize(clean.numpy(), hooked.numpy(), layers, alice, bob)
    result = {"config": config, "fingerprint": fp, "quirky_version": quirky.__version__, **summary}
    table = df[["id", "character", "alice_label", "bob_label", "difficulty_quantile"]].copy()
    table["clean"] = clean.numpy()
    for i, layer in enumerate(layers):
        table[f"layer_{layer}"] = hooked[i].numpy()
    with replace_output(out, "intervene", inputs=inputs) as tmp:
        table.to_parquet(tmp / LOG_ODDS, index=False)
        write_json(tmp / RESULT_JSON, result)
