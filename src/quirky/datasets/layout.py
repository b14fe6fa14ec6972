"""The on-disk dataset directory (Contract 1): fixed parquet schema, writing and reading splits.

Why a fixed, explicit schema: the files must load unchanged with `datasets.load_dataset("parquet", ...)` like the
original `EleutherAI/quirky_*_raw` hub datasets, and must be byte-identical for the same inputs, so nothing may
depend on pandas' dtype inference or carry pandas index metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from quirky.errors import QuirkyError
from quirky.fileio import atomic_path, read_json

SPLITS: tuple[str, ...] = ("train", "validation", "test")
META_FILE = "dataset.json"
CHARACTERS: tuple[str, str] = ("Alice", "Bob")

#: Record columns after `template_args`, in file order.
_RECORD_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("character", pa.string()),
    ("label", pa.bool_()),
    ("alice_label", pa.bool_()),
    ("bob_label", pa.bool_()),
    ("difficulty", pa.float64()),
    ("difficulty_quantile", pa.float64()),
)


def arg_type(values: list[Any], name: str) -> pa.DataType:
    """The arrow type of one template argument: int64, float64, bool or string (nothing else is templatable)."""
    if any(v is None for v in values):
        raise QuirkyError(f"template argument '{name}' has missing values; the source must fill every row.")
    inferred = pa.array(values).type if values else pa.string()
    if pa.types.is_boolean(inferred):
        return pa.bool_()
    if pa.types.is_integer(inferred):
        return pa.int64()
    if pa.types.is_floating(inferred):
        return pa.float64()
    if pa.types.is_string(inferred) or pa.types.is_large_string(inferred) or pa.types.is_null(inferred):
        return pa.string()
    raise QuirkyError(f"template argument '{name}' has unsupported type {inferred}; use text or numbers.")


def record_schema(arg_types: list[tuple[str, pa.DataType]]) -> pa.Schema:
    """The split schema: `id`, `template_args: struct{<args>, character}`, then the record fields."""
    struct = pa.struct([*(pa.field(n, t) for n, t in arg_types), pa.field("character", pa.string())])
    return pa.schema([pa.field("id", pa.string()), pa.field("template_args", struct), *_RECORD_FIELDS])


def write_split(path: Path, columns: dict[str, list[Any]], schema: pa.Schema) -> None:
    """Write one split atomically with fixed writer options (deterministic bytes for equal input)."""
    table = pa.Table.from_pydict(columns, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy", use_dictionary=True, write_statistics=True)


def split_path(dataset_dir: str | Path, split: str) -> Path:
    """The file of one split in a dataset directory."""
    return Path(dataset_dir) / f"{split}.parquet"


def _require_dir(dataset_dir: str | Path) -> Path:
    d = Path(dataset_dir)
    if not d.is_dir():
        raise QuirkyError(
            f"dataset directory {d} does not exist; build it with `quirky datasets build NAME --out {d}`."
        )
    if not (d / META_FILE).is_file():
        raise QuirkyError(
            f"{d} is not a quirky dataset directory (no {META_FILE}); build one with `quirky datasets build`."
        )
    return d


def read_meta(dataset_dir: str | Path) -> dict[str, Any]:
    """The parsed `dataset.json` of a dataset directory."""
    d = _require_dir(dataset_dir)
    meta = read_json(d / META_FILE)  # a damaged file is a one-line BadFileError naming it
    if not isinstance(meta, dict) or "name" not in meta:
        raise QuirkyError(f"{d / META_FILE} has no 'name'; rebuild the dataset.")
    return meta


def dataset_name(dataset_dir: str | Path) -> str:
    """The registered dataset name a directory was built from (e.g. 'addition')."""
    return str(read_meta(dataset_dir)["name"])


#: The columns of a split in the raw schema that every reader relies on.
SPLIT_COLUMNS = (
    "id",
    "template_args",
    "character",
    "label",
    "alice_label",
    "bob_label",
    "difficulty",
    "difficulty_quantile",
)


def load_split(dataset_dir: str | Path, split: str) -> pd.DataFrame:
    """One split in the raw schema (`template_args` as dicts, labels as bool)."""
    if split not in SPLITS:
        raise QuirkyError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    d = _require_dir(dataset_dir)
    path = split_path(d, split)
    if not path.is_file():
        raise QuirkyError(f"{path} is missing; rebuild the dataset with `quirky datasets build`.")
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as e:
        raise QuirkyError(
            f"{path} is not a readable parquet file ({str(e).splitlines()[0][:160]}); it is damaged or truncated: "
            "rebuild the dataset with `quirky datasets build`."
        ) from None
    missing = [c for c in SPLIT_COLUMNS if c not in df.columns]
    if missing:
        raise QuirkyError(
            f"{path} lacks the column(s) {', '.join(missing)}; it is not a quirky dataset split: rebuild it with "
            "`quirky datasets build` (or `quirky datasets import` for a published one)."
        )
    for col in ("label", "alice_label", "bob_label"):
        df[col] = df[col].astype(bool)
    for col in ("difficulty", "difficulty_quantile"):
        df[col] = df[col].astype("float64")
    return df
