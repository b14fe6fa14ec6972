"""Source handling shared by the four text datasets (authors, sciq, sentiment, nli).

Why: every text dataset must fail the same way when its source is missing, unreadable, empty or lacks a column,
with one line that names the file, the columns and how to provide them (never a pandas traceback); and each maps
its source's labels, text and optional `difficulty` column the same way.  File reading itself is the shared
`quirky.datasets.sources.read_table`; the hub (`datasets.load_dataset`) is only reachable when online.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quirky.datasets.sources import read_table
from quirky.errors import QuirkyError


def read_source(path: Path, *, dataset: str, how_to: str) -> pd.DataFrame:
    """Read a local source table; every error also says what this dataset needs (`how_to`)."""
    try:
        return read_table(path, (), what=f"{dataset} source")
    except QuirkyError as e:
        raise QuirkyError(f"{str(e).rstrip('.')}; {how_to}") from e


def require_columns(
    frame: pd.DataFrame, columns: Iterable[str], *, dataset: str, where: str, how_to: str
) -> None:
    """Raise a `QuirkyError` naming every missing column and the columns that are there."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns)) or "none"
        raise QuirkyError(
            f"{dataset}: {where} lacks column(s) {', '.join(missing)} (it has: {have}); {how_to}"
        )


def rename_aliases(frame: pd.DataFrame, aliases: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Rename the first present alias of each canonical column (e.g. `content` or `review` -> `text`)."""
    renames: dict[str, str] = {}
    for canonical, names in aliases.items():
        if canonical in frame.columns:
            continue
        for alias in names:
            if alias in frame.columns:
                renames[alias] = canonical
                break
    return frame.rename(columns=renames) if renames else frame


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection (a quick probe; the hub client itself would
    retry for half a minute with noisy logs before failing)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_hub(dataset_id: str, *, dataset: str, how_to: str) -> Any:
    """All splits of a hub dataset concatenated in split-name order (a `datasets.Dataset`); offline -> one clear error.

    With `HF_HUB_OFFLINE=1` only the local cache is used; otherwise an unreachable hub fails at once.
    """
    import datasets

    if not datasets.config.HF_HUB_OFFLINE and not hub_reachable():
        raise QuirkyError(
            f"{dataset}: the Hugging Face hub is unreachable, so the dataset '{dataset_id}' cannot be downloaded "
            f"(set HF_HUB_OFFLINE=1 to use a cached copy); {how_to}"
        )
    try:
        loaded = datasets.load_dataset(dataset_id)
    except Exception as e:  # offline, unknown id, cache miss: all the same to the user
        text = str(e).strip()
        detail = f"{type(e).__name__}: {text.splitlines()[0][:160]}" if text else type(e).__name__
        raise QuirkyError(
            f"{dataset}: could not load the Hugging Face hub dataset '{dataset_id}' ({detail}); "
            f"the hub is unreachable here or the dataset is not cached; {how_to}"
        ) from e
    if isinstance(loaded, datasets.DatasetDict):
        return datasets.concatenate_datasets([loaded[s] for s in sorted(loaded.keys())])
    return loaded


def text_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A string column with missing values as "" and surrounding whitespace removed."""
    return frame[column].map(
        lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
    )


def numeric_column(frame: pd.DataFrame, column: str, *, dataset: str, where: str) -> np.ndarray:
    """A float column with every value finite, or a `QuirkyError` pointing at the first bad row."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise QuirkyError(
            f"{dataset}: column '{column}' in {where} must be a finite number in every row "
            f"(row {i} holds {frame[column].iloc[i]!r}); fix or remove that column"
        )
    return values


def map_labels(
    values: pd.Series,
    mapping: Mapping[str, bool | None],
    *,
    dataset: str,
    where: str,
    column: str = "label",
) -> pd.Series:
    """Map raw labels to True/False (None = drop the row); keys are compared as lower-cased strings.

    Numbers are matched by their integer form (1.0 -> "1"), booleans as "true"/"false".  Any other value raises,
    listing the unknown values and the accepted ones.
    """

    def key(v: Any) -> str:
        if isinstance(v, bool | np.bool_):
            return "true" if v else "false"
        if isinstance(v, int | np.integer):
            return str(int(v))
        if isinstance(v, float | np.floating) and np.isfinite(v) and float(v).is_integer():
            return str(int(v))
        return str(v).strip().lower()

    keys = values.map(key)
    unknown = sorted(set(keys) - set(mapping))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise QuirkyError(
            f"{dataset}: column '{column}' in {where} holds unknown value(s) {shown}; "
            f"accepted: {', '.join(sorted(mapping))}"
        )
    return keys.map(lambda k: mapping[k])


def usable_count(n_available: int, n_questions: int | None, *, dataset: str, where: str) -> int:
    """How many questions to build: all requested, capped by what the source holds (the build step reports a
    too-small source in terms of the requested split sizes); a clear error when nothing is usable."""
    if n_available == 0:
        raise QuirkyError(f"{dataset}: {where} yields no usable questions")
    return n_available if n_questions is None else min(n_questions, n_available)
