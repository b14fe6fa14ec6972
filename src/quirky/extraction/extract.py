"""Extract one split's hidden states, contrast pairs and LM log-odds into an activation store, resumably.

Why chunks: rows are processed in fixed chunks of the split's own order (sorted by length *inside* a chunk for
little padding).  Each finished chunk is written atomically to a scratch directory beside the output, so memory
stays bounded and an interrupted run restarts at the first missing chunk.  Chunk boundaries and batch composition
depend only on the recorded settings, so a resumed store is byte-identical to an uninterrupted one.  Only when
every chunk exists are the manifest and `store.json` written and the scratch directory renamed into place.
"""

from __future__ import annotations

import logging
import shutil
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

import quirky
from quirky.errors import QuirkyError
from quirky.extraction.forward import Strategy, forward_batch, group_by_prefix, packed_supported
from quirky.extraction.store import (
    ActivationStore,
    _cast_checked,
    chunk_name,
    finalize_store,
    open_store,
    parse_storage_dtype,
    read_store_json,
    store_fingerprint,
    write_chunk,
)
from quirky.fileio import fingerprint, read_json, swap_in, write_json
from quirky.models.choices import encode_with_choices
from quirky.outdir import (
    check_output,
    discard_scratch,
    hold_output,
    release_output,
    scratch_path,
    write_marker,
)

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "id",
    "statement",
    "choices",
    "character",
    "label",
    "alice_label",
    "bob_label",
    "difficulty_quantile",
    "template",
)
PARTIAL_JSON = "partial.json"
# Verdicts of the packed-vs-duplicate self-check, per live model object (the answer depends only on the model).
_PACKED_CHECKS: weakref.WeakKeyDictionary[Any, dict[tuple[str, bool], bool]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ExtractSettings:
    """How to extract.  `batch_size`, `chunk_size` and `strategy` only change float rounding, not what is
    extracted, so they are recorded under `config["runtime"]` and left out of the fingerprint."""

    batch_size: int = 32
    chunk_size: int = 512
    storage_dtype: str = "float16"
    full_log_odds: bool = False
    truncate: bool = False  # False: refuse prompts longer than the context; True: keep their last tokens
    strategy: Literal["auto", "packed", "duplicate"] = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.batch_size < 1:
            raise QuirkyError(f"batch size must be >= 1, got {self.batch_size}")
        if self.chunk_size < 1:
            raise QuirkyError(f"chunk size must be >= 1, got {self.chunk_size}")
        if self.strategy not in ("auto", "packed", "duplicate"):
            raise QuirkyError(f"unknown strategy {self.strategy!r}; choose auto, packed or duplicate")
        parse_storage_dtype(self.storage_dtype)


@dataclass
class Encoded:
    prompts: list[list[int]]
    choice0: list[list[int]]
    choice1: list[list[int]]
    truncated: int


def partial_dir(out: Path) -> Path:
    """The scratch directory of an unfinished extraction into `out` (`outdir.scratch_path`)."""
    return scratch_path(out)


def check_frame(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise QuirkyError(
            f"the examples lack the column(s) {', '.join(missing)}; extraction needs a templated split "
            "(quirky.datasets.load_templated) with columns " + ", ".join(REQUIRED_COLUMNS)
        )
    if len(df) == 0:
        raise QuirkyError("there are no examples to extract (empty split, or --max-examples 0)")


def frame_digest(df: pd.DataFrame) -> str:
    """A fingerprint of exactly the rows (prompts, choices and metadata) that the store is built from."""
    cols = df[list(REQUIRED_COLUMNS)].itertuples(index=False)
    records = [
        [
            str(r.id),
            str(r.statement),
            [str(c) for c in r.choices],
            str(r.character),
            int(r.label),
            int(r.alice_label),
            int(r.bob_label),
            float(r.difficulty_quantile),
            int(r.template),
        ]
        for r in cols
    ]
    return fingerprint(records)


def context_length(model: Any, tokenizer: Any) -> int | None:
    n = getattr(model.config, "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    m = getattr(tokenizer, "model_max_length", None)
    return m if isinstance(m, int) and 0 < m < 10**7 else None


def encode_frame(
    tokenizer: Any, df: pd.DataFrame, context: int | None, *, full: bool, truncate: bool
) -> Encoded:
    """Tokenize prompts and in-context choices; refuse (or left-truncate) prompts that overflow the context."""
    prompts, c0, c1 = encode_with_choices(tokenizer, df["statement"].tolist(), df["choices"].tolist())
    truncated = 0
    if context is not None:
        bos = getattr(tokenizer, "bos_token_id", None)
        too_long = []
        for i, p in enumerate(prompts):
            extra = max(len(c0[i]), len(c1[i])) if full else 1
            if len(p) + extra > context:
                too_long.append(i)
        if too_long and not truncate:
            worst = max(too_long, key=lambda i: len(prompts[i]))
            raise QuirkyError(
                f"{len(too_long)} of {len(prompts)} prompts do not fit the model's context of {context} tokens "
                f"(longest: {len(prompts[worst])} tokens, example id {df['id'].iloc[worst]}); shorten them, or "
                "pass --truncate to keep each prompt's last tokens"
            )
        for i in too_long:
            extra = max(len(c0[i]), len(c1[i])) if full else 1
            p = prompts[i]
            keep_bos = bool(p) and bos is not None and p[0] == bos
            budget = context - extra - int(keep_bos)
            if budget < 1:
                raise QuirkyError(f"the answer choices of example {df['id'].iloc[i]} alone fill the context")
            prompts[i] = ([bos] if keep_bos else []) + p[-budget:]
        truncated = len(too_long)
        if truncated:
            log.warning(
                "%d of %d prompts were longer than the context of %d tokens; kept their last tokens",
                truncated,
                len(prompts),
                context,
            )
    return Encoded(prompts=prompts, choice0=c0, choice1=c1, truncated=truncated)


def choose_strategy(model: Any, enc: Encoded, requested: str, pad_id: int, full: bool) -> Strategy:
    """`auto`: packed when the model takes custom 4D masks *and* a self-check on the first examples agrees with
    the duplicate strategy (a model that silently rebuilds its own mask would fail it); else duplicate."""
    if requested in ("packed", "duplicate"):
        return requested  # type: ignore[return-value]
    max_len = max(
        len(p) + len(a) + len(b) for p, a, b in zip(enc.prompts, enc.choice0, enc.choice1, strict=True)
    )
    if not packed_supported(model, max_len):
        return "duplicate"
    key = (str(model.dtype), full)
    verdicts = _PACKED_CHECKS.setdefault(model, {})
    if key not in verdicts:
        verdicts[key] = _packed_agrees(model, enc, pad_id, full)
    if not verdicts[key]:
        log.warning(
            "packed extraction disagrees with plain forward passes for this model; using the duplicate strategy"
        )
        return "duplicate"
    return "packed"


def _packed_agrees(model: Any, enc: Encoded, pad_id: int, full: bool) -> bool:
    """Packed and duplicate outputs agree on a few examples (one forward each; run once per model)."""
    # the first examples in token order, so that the check includes a shared-prefix group
    idx = sorted(range(len(enc.prompts)), key=lambda i: (enc.prompts[i], i))[:4]
    args = ([enc.prompts[i] for i in idx], [enc.choice0[i] for i in idx], [enc.choice1[i] for i in idx])
    a = forward_batch(model, *args, pad_id=pad_id, strategy="packed", full_log_odds=full)
    b = forward_batch(model, *args, pad_id=pad_id, strategy="duplicate", full_log_odds=full)
    tol = 1e-3 if model.dtype == torch.float32 else 5e-2

    def close(x: torch.Tensor, y: torch.Tensor) -> bool:
        return bool((x - y).abs().max() <= tol * y.abs().max().clamp_min(1.0))

    return close(a.hiddens, b.hiddens) and close(a.pairs, b.pairs) and close(a.lm_log_odds, b.lm_log_odds)


def build_config(
    df: pd.DataFrame, source: dict[str, Any], settings: ExtractSettings, model_dtype: torch.dtype
) -> dict[str, Any]:
    """The store's config; everything but `runtime` is fingerprinted.  Computable before the model is loaded
    (the model's identity is in `source`), so a finished store can be reused without loading anything."""
    return {
        "kind": "quirky-extraction",
        "quirky_version": quirky.__version__,
        "source": source,
        "rows": {"n": len(df), "digest": frame_digest(df)},
        "model_dtype": str(model_dtype).removeprefix("torch."),
        "storage_dtype": settings.storage_dtype,
        "full_log_odds": settings.full_log_odds,
        "truncate": settings.truncate,
        "runtime": {
            "batch_size": settings.batch_size,
            "chunk_size": settings.chunk_size,
            "strategy": settings.strategy,
            **settings.extra,
        },
    }


def _chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]


def _meta_frame(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in REQUIRED_COLUMNS if c not in ("statement", "choices")]
    if "difficulty" in df.columns:
        cols.append("difficulty")
    return df[cols].reset_index(drop=True)


def _prepare_out(
    out: Path, fp: str, overwrite: bool, inputs: tuple[str | Path | None, ...] = ()
) -> ActivationStore | None:
    """Reuse a finished store with the same fingerprint; refuse a different store at `out` unless `overwrite`,
    and anything that is not a store (or is an input, or the working directory) always."""
    check_output(out, "extract", inputs=inputs)
    if not out.exists():
        return None
    info = read_store_json(out)
    if info is not None and info["fingerprint"] == fp:
        log.info("reusing the finished store at %s (fingerprint %s)", out, fp)
        return open_store(out)
    if overwrite:
        return None
    if info is not None:
        theirs = info.get("config", {})
        raise QuirkyError(
            f"{out} already holds a different extraction (fingerprint {info['fingerprint']}, model "
            f"{theirs.get('source', {}).get('model', {}).get('model', {}).get('name', '?')}, split "
            f"{theirs.get('source', {}).get('split', '?')}); this one has fingerprint {fp}. Choose another --out "
            "or pass --overwrite"
        )
    return None


def _open_partial(scratch: Path, config: dict[str, Any], fp: str) -> dict[str, Any]:
    """Resume the scratch dir of an identical extraction (keeping its runtime settings), or start it afresh."""
    state_file = scratch / PARTIAL_JSON
    if state_file.is_file():
        state = read_json(state_file)
        if state.get("fingerprint") == fp:
            for f in scratch.iterdir():  # temp files of a chunk write cut short by a hard kill
                if f.name.startswith("."):
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
            if state["config"]["runtime"] != config["runtime"]:
                log.info("resuming with the interrupted run's settings %s", state["config"]["runtime"])
            return state
        log.warning("discarding an interrupted extraction with other settings in %s", scratch)
    discard_scratch(scratch, PARTIAL_JSON)
    scratch.mkdir(parents=True)
    state = {"fingerprint": fp, "config": config}
    write_json(state_file, state)
    return state


def extract_frame(
    model: Any,
    tokenizer: Any,
    df: pd.DataFrame,
    out: str | Path,
    *,
    source: dict[str, Any],
    settings: ExtractSettings | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> ActivationStore:
    """Extract a templated frame (Contract 1 columns) with a loaded model into the store at `out`.

    `source` describes where model and rows came from (it goes into the config and fingerprint together with a
    digest of the rows themselves).  `on_chunk(i)` is called after chunk `i` is on disk (tests interrupt there).
    """
    settings = settings or ExtractSettings()
    settings.check()
    check_frame(df)
    df = df.reset_index(drop=True)
    out = Path(out)
    storage_dtype = parse_storage_dtype(settings.storage_dtype)
    context = context_length(model, tokenizer)
    config = build_config(df, source, settings, model.dtype)
    fp = store_fingerprint(config)
    reused = _prepare_out(out, fp, overwrite)
    if reused is not None:
        return reused

    enc = encode_frame(tokenizer, df, context, full=settings.full_log_odds, truncate=settings.truncate)
    config["runtime"]["truncated_prompts"] = enc.truncated
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    hold_output(out, "extract")  # two extractions into one --out would share (and mix) the scratch directory
    scratch = partial_dir(out)
    state = _open_partial(scratch, config, fp)
    _resolve_strategy(model, enc, state, scratch, pad_id, settings.full_log_odds)
    config = state["config"]  # with the interrupted run's runtime settings, when resuming
    bounds = _chunk_bounds(len(df), config["runtime"]["chunk_size"])
    shape = _extract_missing_chunks(
        model, enc, scratch, bounds, config["runtime"], pad_id, settings, progress, on_chunk
    )
    num_layers, hidden_size = shape or _stored_shape(scratch)
    finalize_store(
        scratch,
        meta=_meta_frame(df),
        config=config,
        chunks=bounds,
        num_layers=num_layers,
        hidden_size=hidden_size,
        storage_dtype=storage_dtype,
        has_full_log_odds=settings.full_log_odds,
    )
    _publish(scratch, out)
    return open_store(out)


def _resolve_strategy(
    model: Any, enc: Encoded, state: dict[str, Any], scratch: Path, pad_id: int, full: bool
) -> None:
    """The strategy is resolved once and saved with the scratch state, so that a resumed run batches its
    remaining chunks exactly as the interrupted run did (the strategy decides batch composition, hence float
    rounding) even where `auto` would now resolve differently, and the self-check is not run again."""
    runtime = state["config"]["runtime"]
    if runtime.get("resolved_strategy") is None:
        runtime["resolved_strategy"] = choose_strategy(model, enc, runtime["strategy"], pad_id, full)
        write_json(scratch / PARTIAL_JSON, state)


def _extract_missing_chunks(
    model: Any,
    enc: Encoded,
    scratch: Path,
    bounds: list[tuple[int, int]],
    runtime: dict[str, Any],
    pad_id: int,
    settings: ExtractSettings,
    progress: bool,
    on_chunk: Callable[[int], None] | None,
) -> tuple[int, int] | None:
    """Compute and write every chunk not yet in `scratch`, one at a time, so that memory stays bounded and an
    interruption loses at most one chunk.  Batch size and strategy come from `runtime`, the settings the scratch
    directory was started with, so that a resumed store is byte-identical.  Returns (layers, hidden size) of the
    chunks computed; None when every chunk came from an earlier run."""
    from tqdm.auto import tqdm

    from quirky.progress import enabled as progress_enabled

    strategy: Strategy = runtime["resolved_strategy"]
    storage_dtype = parse_storage_dtype(settings.storage_dtype)
    shape = None
    done = sum(b - a for i, (a, b) in enumerate(bounds) if (scratch / chunk_name(i)).is_file())
    bar = tqdm(  # drawn on a terminal only: not in logs, not under --quiet (quirky.progress)
        total=bounds[-1][1],  # every row
        initial=done,
        unit="prompt",
        desc="extract",
        disable=not (progress and progress_enabled()),
        smoothing=0.1,
        leave=None,
    )
    try:
        for ci, (a, b) in enumerate(bounds):
            path = scratch / chunk_name(ci)
            if path.is_file():
                continue
            result = _extract_chunk(
                model, enc, a, b, runtime["batch_size"], pad_id, strategy, settings, storage_dtype, bar
            )
            write_chunk(path, storage_dtype=storage_dtype, **result)
            shape = result["hiddens"].shape[0], result["hiddens"].shape[2]
            if on_chunk is not None:
                on_chunk(ci)
    except QuirkyError:
        # deterministic failures (NaN, overflow): there is nothing worth resuming
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        log.warning("interrupted; finished chunks are kept in %s: rerun the same command to resume", scratch)
        raise
    finally:
        bar.close()
    return shape


def _stored_shape(scratch: Path) -> tuple[int, int]:
    """(layers, hidden size) read from the first chunk's header, for a resumed run that had nothing left to
    compute: the store's metadata must not need a model forward pass."""
    from safetensors import safe_open

    with safe_open(scratch / chunk_name(0), framework="pt") as f:
        keys = [k for k in f.keys() if k.startswith("hiddens.")]  # noqa: SIM118
        return len(keys), f.get_slice("hiddens.0").get_shape()[1]


def _publish(scratch: Path, out: Path) -> None:
    """Turn the finished scratch directory into the store at `out` in one rename, so that `out` only ever holds
    a complete store (or the previous one), never a half-written one."""
    (scratch / PARTIAL_JSON).unlink()
    write_marker(scratch, "extract")
    swap_in(scratch, out)
    release_output(out)


def _plan_batches(
    enc: Encoded, a: int, b: int, batch_size: int, strategy: Strategy
) -> list[list[tuple[list[int], int]]]:
    """Rows [a, b) as batches of packed groups (examples sharing a prompt prefix), longest rows first, each
    batch holding up to `batch_size` examples.  Depends only on the token ids and settings (deterministic)."""
    if strategy == "packed":
        groups = group_by_prefix(enc.prompts, list(range(a, b)))
    else:
        groups = [([i], 0) for i in range(a, b)]

    def length(g: tuple[list[int], int]) -> int:
        members, shared = g
        return shared + sum(
            len(enc.prompts[i]) - shared + len(enc.choice0[i]) + len(enc.choice1[i]) for i in members
        )

    order = sorted(range(len(groups)), key=lambda k: (-length(groups[k]), k))
    batches: list[list[tuple[list[int], int]]] = []
    current: list[tuple[list[int], int]] = []
    count = 0
    for k in order:
        g = groups[k]
        if current and count + len(g[0]) > batch_size:
            batches.append(current)
            current, count = [], 0
        current.append(g)
        count += len(g[0])
    if current:
        batches.append(current)
    return batches


def _extract_chunk(
    model: Any,
    enc: Encoded,
    a: int,
    b: int,
    batch_size: int,
    pad_id: int,
    strategy: Strategy,
    settings: ExtractSettings,
    storage_dtype: torch.dtype,
    bar: Any,
) -> dict[str, torch.Tensor | None]:
    """Rows [a, b) of the split, computed batch by batch; results in row order."""
    m = b - a
    hiddens = pairs = None
    lo = torch.empty(m, dtype=torch.float32)
    lo_full = torch.empty(m, dtype=torch.float32) if settings.full_log_odds else None
    for batch in _plan_batches(enc, a, b, batch_size, strategy):
        rows = [i for members, _ in batch for i in members]
        local = {i: k for k, i in enumerate(rows)}
        res = forward_batch(
            model,
            [enc.prompts[i] for i in rows],
            [enc.choice0[i] for i in rows],
            [enc.choice1[i] for i in rows],
            pad_id=pad_id,
            strategy=strategy,
            full_log_odds=settings.full_log_odds,
            groups=[([local[i] for i in members], shared) for members, shared in batch]
            if strategy == "packed"
            else None,
        )
        where = f"rows {min(rows)}..{max(rows)}"
        h = _cast_checked(res.hiddens, storage_dtype, f"hidden states ({where})")
        p = _cast_checked(res.pairs, storage_dtype, f"contrast-pair states ({where})")
        if hiddens is None or pairs is None:
            hiddens = torch.empty((h.shape[0], m, h.shape[2]), dtype=storage_dtype)
            pairs = torch.empty((p.shape[0], m, 2, p.shape[3]), dtype=storage_dtype)
        t = torch.tensor(rows) - a
        hiddens[:, t] = h
        pairs[:, t] = p
        lo[t] = _cast_checked(res.lm_log_odds, torch.float32, f"LM log-odds ({where})")
        if lo_full is not None and res.lm_log_odds_full is not None:
            lo_full[t] = _cast_checked(
                res.lm_log_odds_full, torch.float32, f"multi-token LM log-odds ({where})"
            )
        bar.update(len(rows))
    assert hiddens is not None and pairs is not None
    return {"hiddens": hiddens, "pairs": pairs, "lm_log_odds": lo, "lm_log_odds_full": lo_full}


def extraction_source(
    model: str,
    adapter: str | Path | None,
    dataset: str | Path,
    split: str,
    *,
    setup: str = "single",
    seed: int = 0,
    max_examples: int | None = None,
) -> dict[str, Any]:
    """Where a store's model and rows come from (recorded in its config and fingerprint)."""
    from quirky.datasets import read_meta
    from quirky.models import model_identity

    meta = read_meta(dataset)
    return {
        "model": model_identity(model, adapter),
        "dataset": {"name": meta.get("name"), "fingerprint": meta.get("fingerprint")},
        "split": split,
        "setup": setup,
        "seed": seed,
        "max_examples": max_examples,
    }


def planned_fingerprint(
    df: pd.DataFrame,
    source: dict[str, Any],
    settings: ExtractSettings | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
) -> str:
    """The fingerprint the store of these inputs will have, computed before any model is loaded (the model's
    dtype is the one `load_model` picks for `device` unless `dtype` is given)."""
    from quirky.models.loading import default_device, default_dtype, parse_dtype

    settings = settings or ExtractSettings()
    model_dtype = parse_dtype(dtype) or default_dtype(torch.device(device) if device else default_device())
    return store_fingerprint(build_config(df, source, settings, model_dtype))


def store_is_current(
    out: str | Path,
    df: pd.DataFrame,
    source: dict[str, Any],
    settings: ExtractSettings | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
) -> bool:
    """Whether `out` holds the finished store of exactly these inputs (rows, model, settings, dtype), so that it
    can be reused without loading the model: the extraction stage's cache decision, for callers that hold
    several stages' models (`quirky run`)."""
    info = read_store_json(out) if Path(out).exists() else None
    return info is not None and info["fingerprint"] == planned_fingerprint(
        df, source, settings, device=device, dtype=dtype
    )


def extract(
    model: str,
    dataset: str | Path,
    split: str,
    out: str | Path,
    *,
    adapter: str | Path | None = None,
    setup: str = "single",
    seed: int = 0,
    max_examples: int | None = None,
    settings: ExtractSettings | None = None,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ActivationStore:
    """The whole stage: load the templated split and the model, extract, return the opened store."""
    from quirky.datasets import load_templated
    from quirky.models import load_model

    df = load_templated(dataset, split, setup=setup, seed=seed, max_examples=max_examples)
    check_frame(df)
    source = extraction_source(
        model, adapter, dataset, split, setup=setup, seed=seed, max_examples=max_examples
    )
    settings = settings or ExtractSettings()
    settings.check()
    reused = _prepare_out(
        Path(out),
        planned_fingerprint(df, source, settings, device=device, dtype=dtype),
        overwrite,
        (dataset, adapter, model),
    )
    if reused is not None:
        return reused
    lm, tokenizer = load_model(model, adapter=adapter, device=device, dtype=dtype, device_map=device_map)
    return extract_frame(
        lm, tokenizer, df, out, source=source, settings=settings, overwrite=overwrite, progress=progress
    )


__all__ = [
    "ExtractSettings",
    "build_config",
    "check_frame",
    "extract",
    "extract_frame",
    "extraction_source",
    "partial_dir",
    "planned_fingerprint",
    "store_is_current",
]
