"""Read a user-provided source table (CSV, TSV, JSON lines, JSON, parquet) with clear errors.

Why one reader: every dataset that accepts `--source PATH` must fail the same way on a missing file, an empty
file or a missing column — one line that names the file and what to fix — instead of a pandas traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from quirky.errors import QuirkyError

SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def read_table(path: str | Path, required: Sequence[str], what: str = "source") -> pd.DataFrame:
    """Read `path` and check it has rows and the `required` columns (extra columns are kept)."""
    p = Path(path)
    if not p.exists():
        raise QuirkyError(f"{what} file {p} does not exist; pass an existing file with --source.")
    if p.is_dir():
        raise QuirkyError(f"{what} {p} is a directory; pass a {'/'.join(SUFFIXES)} file with --source.")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise QuirkyError(
            f"{what} file {p} has an unsupported type '{suffix}'; use one of {', '.join(SUFFIXES)}."
        )
    if p.stat().st_size == 0:
        raise QuirkyError(
            f"{what} file {p} is empty; it needs a header and rows with columns {', '.join(required)}."
        )
    try:
        if suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix == ".tsv":
            df = pd.read_csv(p, sep="\t")
        elif suffix == ".jsonl":
            df = pd.read_json(p, lines=True)
        elif suffix == ".json":
            df = pd.read_json(p)
        else:
            df = pd.read_parquet(p)
    except Exception as e:  # any parse failure is a bad file, reported in one line
        raise QuirkyError(
            f"cannot read {what} file {p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise QuirkyError(
            f"{what} file {p} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, df.columns))}."
        )
    if len(df) == 0:
        raise QuirkyError(f"{what} file {p} has no rows.")
    return df
