"""The persona x difficulty subsets of the benchmark: one home for their names and for the rule that selects them.

`A`/`B` are Alice's/Bob's rows, `E`/`H` their easy (difficulty_quantile <= EASY) and hard (>= HARD) quartiles, as
in the original (`elk_generalization`); `all` is every row.  Every stage that selects rows by persona or
difficulty (finetuning's training filter, the activation store's masks, the probe grid, anomaly detection's row
check, the interventions' test prompts, the report's counts) computes it here, so moving a cutoff moves it
everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quirky.errors import QuirkyError

PERSONAS: dict[str, str] = {"A": "Alice", "B": "Bob"}
SUBSETS: tuple[str, ...] = ("all", "A", "B", "AE", "AH", "BE", "BH")
#: the default cutoffs on `difficulty_quantile`: easy at or below, hard at or above
EASY, HARD = 0.25, 0.75
#: display names of the persona subsets (the report's tables and figures)
SUBSET_NAMES: dict[str, str] = {
    "A": "Alice, all",
    "B": "Bob, all",
    "AE": "Alice, easy",
    "AH": "Alice, hard",
    "BE": "Bob, easy",
    "BH": "Bob, hard",
}


def check_subset(subset: str, what: str = "subset") -> str:
    if subset not in SUBSETS:
        raise QuirkyError(f"unknown {what} {subset!r}; choose one of {', '.join(SUBSETS)}")
    return subset


def select_mask(
    frame: Any,
    character: str | None = None,
    difficulty: str | None = None,
    *,
    easy: float = EASY,
    hard: float = HARD,
) -> np.ndarray:
    """Boolean row mask of a frame with `character` and `difficulty_quantile` columns: the rows of one persona
    (`Alice`/`Bob`, None for both) on one difficulty side (`easy`/`hard`, None for every row)."""
    mask = np.ones(len(frame), dtype=bool)
    if character is not None:
        mask &= (frame["character"] == character).to_numpy()
    if difficulty is not None:
        q = frame["difficulty_quantile"].to_numpy()
        if difficulty == "easy":
            mask &= q <= easy
        elif difficulty == "hard":
            mask &= q >= hard
        else:
            raise ValueError(f"difficulty must be 'easy', 'hard' or None, not {difficulty!r}")
    return mask


def subset_parts(subset: str) -> tuple[str | None, str | None]:
    """(persona, difficulty side) of a subset name: `AE` -> (`Alice`, `easy`), `B` -> (`Bob`, None)."""
    check_subset(subset)
    if subset == "all":
        return None, None
    side = {"": None, "E": "easy", "H": "hard"}[subset[1:]]
    return PERSONAS[subset[0]], side


def subset_mask(frame: Any, subset: str, easy: float = EASY, hard: float = HARD) -> np.ndarray:
    """Boolean row mask of `subset` (all, A, B, AE, AH, BE, BH) in a frame with `character` and
    `difficulty_quantile` columns."""
    character, difficulty = subset_parts(subset)
    return select_mask(frame, character, difficulty, easy=easy, hard=hard)
