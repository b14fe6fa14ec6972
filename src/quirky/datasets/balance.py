"""Class balancing by undersampling (used by finetuning for its train and validation sets).

Why undersample rather than reweight: the original trained on a 50/50 set of the persona label (`balance()` in
its sft.py), and a balanced set keeps the majority-class answer from being a shortcut.  Kept rows stay in their
input order, so balancing does not shuffle what the caller already ordered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quirky.errors import QuirkyError


def balance(df: pd.DataFrame, column: str = "label", seed: int = 0) -> pd.DataFrame:
    """Undersample the majority class of the binary `column` to the minority's size (deterministic for `seed`).

    Returns the kept rows in input order with a fresh 0..n-1 index.
    """
    if column not in df:
        raise QuirkyError(
            f"cannot balance on '{column}': no such column (have {', '.join(map(str, df.columns))})."
        )
    values = df[column].to_numpy()
    classes = pd.unique(values)
    if len(classes) > 2:
        raise QuirkyError(
            f"cannot balance on '{column}': it has {len(classes)} values, expected a binary label."
        )
    if len(classes) < 2:
        raise QuirkyError(
            f"cannot balance on '{column}': every row has the same value ({classes[0] if len(classes) else 'no rows'})."
        )
    first, second = sorted(classes.tolist())
    pos_first = np.flatnonzero(values == first)
    pos_second = np.flatnonzero(values == second)
    minority, majority = (
        (pos_first, pos_second) if len(pos_first) <= len(pos_second) else (pos_second, pos_first)
    )
    rng = np.random.default_rng(seed)
    kept_majority = rng.choice(majority, size=len(minority), replace=False)
    keep = np.sort(np.concatenate([minority, kept_majority]))
    return df.iloc[keep].reset_index(drop=True)
