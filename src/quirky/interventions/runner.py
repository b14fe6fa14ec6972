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
from quirky.outdir import check_output, hold_output, replace_output

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
    return out.parent / f".{out.name}.partial"


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
    from quirky.datasets import load_templated, read_meta
    from quirky.models import model_identity

    out = Path(out)
    inputs = [probes, dataset, adapter, activations, model]
    check_output(out, "intervene", inputs=inputs)  # refuse before any work, never after
    probe: ProbeDirection = load_probe_direction(
        probes, method, train_subset, seed=seed, activations=activations
    )
    total = probe.num_layers
    chosen = resolve_layers(layers, total)
    base = split_tag(train_subset)[0]
    test_subset = test_subset or ("all" if base == "all" else base[0])
    setup = setup or probe.setup or "single"
    df = select_examples(load_templated(dataset, split, setup=setup, seed=seed), test_subset, max_examples)
    try:
        identity = model_identity(model, adapter)
    except QuirkyError:
        if loaded is None:
            raise
        # a caller-held model whose name resolves to nothing on disk: identify it by its names only
        identity = {"model": {"name": str(model)}, "adapter": None if adapter is None else str(adapter)}
    config = {
        "kind": "quirky-intervention",
        "model": identity,
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
        "n": len(df),
        "layers": chosen,
        "num_layers": total,
        "last_layer": last_layer,
        "ids_digest": fingerprint(df["id"].tolist()),
    }
    fp = fingerprint(config)
    result_file = out / RESULT_JSON
    if result_file.is_file():
        existing = read_json(result_file)
        if existing.get("fingerprint") == fp:
            log.info("intervention results at %s are up to date (fingerprint %s)", out, fp)
            return existing
        if not overwrite:
            raise QuirkyError(
                f"{out} holds intervention results for different settings (fingerprint {existing.get('fingerprint')} "
                f"!= {fp}); choose another --out or pass --overwrite"
            )

    if loaded is None:
        from quirky.models import load_model

        lm, tokenizer = load_model(model, adapter=adapter, device=device, dtype=dtype)
    else:
        lm, tokenizer = loaded() if callable(loaded) else loaded
    if num_layers(lm) != total:
        raise QuirkyError(
            f"the probe has {total} layers but the model has {num_layers(lm)}: the probes were fitted on another model"
        )
    prompt_ids, answer_ids = encode_prompts(tokenizer, df["statement"].tolist(), df["choices"].tolist())
    directions = probe.direction[chosen]
    means = probe.mean[chosen]

    hold_output(out, "intervene")  # the scratch directory is shared by writers of `out`
    scratch = scratch_dir(out)
    state_file = scratch / "state.json"
    if scratch.is_dir() and (not state_file.is_file() or read_json(state_file).get("fingerprint") != fp):
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    write_json(state_file, {"fingerprint": fp})
    n = len(df)
    clean = torch.empty(n)
    hooked = torch.empty((len(chosen), n))
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
            layers=chosen,
            directions=directions,
            means=means,
            pad_id=_pad_id(tokenizer),
            batch_size=batch_size,
            last_layer=last_layer,
        )
        clean[start:stop], hooked[:, start:stop] = c, h
        with atomic_path(chunk_file) as tmp:
            save_file({"clean": c.contiguous(), "hooked": h.contiguous()}, str(tmp))
        if progress:
            log.info("intervened on %d/%d examples x %d layers", stop, n, len(chosen))

    alice = df["alice_label"].to_numpy()
    bob = df["bob_label"].to_numpy()
    summary = summarize(clean.numpy(), hooked.numpy(), chosen, alice, bob)
    result = {"config": config, "fingerprint": fp, "quirky_version": quirky.__version__, **summary}
    table = df[["id", "character", "alice_label", "bob_label", "difficulty_quantile"]].copy()
    table["clean"] = clean.numpy()
    for i, layer in enumerate(chosen):
        table[f"layer_{layer}"] = hooked[i].numpy()
    with replace_output(out, "intervene", inputs=inputs) as tmp:
        table.to_parquet(tmp / LOG_ODDS, index=False)
        write_json(tmp / RESULT_JSON, result)
    shutil.rmtree(scratch, ignore_errors=True)
    return read_json(result_file)
