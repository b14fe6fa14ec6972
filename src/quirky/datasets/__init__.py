"""The 12 quirky datasets: definitions, splitting, persona expansion, templating and balancing (Contract 1).

Other stages use only this API:
`load_split`, `dataset_name`, `templatize`, `load_templated`, `balance`, plus `build_dataset` and the registry.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from quirky.datasets.balance import balance
from quirky.datasets.build import BuildResult, build_dataset
from quirky.datasets.layout import SPLITS, dataset_name, load_split, read_meta
from quirky.datasets.registry import DATASET_NAMES, available_specs, get_spec
from quirky.datasets.templating import SETUPS, setups_for, templatize
from quirky.errors import QuirkyError

__all__ = [
    "DATASET_NAMES",
    "SETUPS",
    "SPLITS",
    "BuildResult",
    "available_specs",
    "balance",
    "build_dataset",
    "dataset_name",
    "get_spec",
    "load_split",
    "load_templated",
    "read_meta",
    "setups_for",
    "templatize",
]


def load_templated(
    dataset_dir: str | Path,
    split: str,
    setup: str = "single",
    seed: int = 0,
    max_examples: int | None = None,
) -> pd.DataFrame:
    """`templatize(load_split(dataset_dir, split), dataset_name(dataset_dir), setup, seed)`.

    `max_examples` keeps the first that many *records* of the split before templating (splits are stored in a
    random question order with Alice and Bob adjacent, so a prefix is a random, persona-balanced sample; with
    setup `all` each record then yields one row per template).
    """
    df = load_split(dataset_dir, split)
    if max_examples is not None:
        if max_examples < 0:
            raise QuirkyError(f"max_examples must be >= 0, got {max_examples}.")
        df = df.iloc[:max_examples].reset_index(drop=True)
    return templatize(df, dataset_name(dataset_dir), setup=setup, seed=seed)
