"""What every quirky dataset definition provides: its templates and a builder for its *base* rows.

A base row is one question, before it is rendered for Alice and Bob.  The shared machinery in
`quirky.datasets.build` splits base rows by question into train/validation/test, expands each to one record per
persona (Alice: label = truth; Bob: label = the systematic error rule), computes difficulty quantiles and writes
parquet.  A dataset module only says how to get questions, what is true, what Bob believes, and how hard it is.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Template:
    """A quirky prompt template.

    `text` has a `{character}` slot and one slot per template argument.  `choices` is (negative, positive):
    the prompt asks a yes/no question whose *positive* answer (choices[1]) means "the label is True".
    """

    text: str
    choices: tuple[str, str]


@dataclass(frozen=True)
class StatementTemplate:
    """A (context, statement) pair for the `standardized` setup; the statement is true iff the label is True."""

    context: str
    statement: str


_DROPPED: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("quirky_dropped", default=None)


def count_dropped(n: int) -> None:
    """Record that a builder dropped `n` duplicate source rows (repeated template arguments), so the dataset's
    `duplicates_dropped` counts them too: deduplication inside a family is otherwise invisible to the build."""
    counter = _DROPPED.get()
    if counter is not None:
        counter[0] += int(n)


@contextlib.contextmanager
def counting_dropped() -> Iterator[list[int]]:
    """Collect `count_dropped` calls made inside the block into `[total]`."""
    counter = [0]
    token = _DROPPED.set(counter)
    try:
        yield counter
    finally:
        _DROPPED.reset(token)


@dataclass(frozen=True)
class BuildRequest:
    """What a builder gets: how many questions are wanted (None = as many as the source holds), an RNG to
    draw them with (the only source of randomness, so output is deterministic), and an optional source path."""

    n_questions: int | None
    rng: np.random.Generator
    source: Path | None = None
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A quirky dataset definition.

    `build_base(req)` returns a DataFrame with one row per base row and the columns:
      - every name in `arg_names` (the template arguments, without `character`),
      - `question`: a key; rows sharing it are the same question (kept in one split; e.g. two proposed results
        for the same (a, b) in arithmetic, or SciQ's correct answer and distractor),
      - `alice_label` (bool, the truth), `bob_label` (bool, Bob's systematic error rule),
      - `difficulty` (float; larger = harder).
    It raises `QuirkyError` when a source is missing or malformed, saying which file or package to provide.

    `default_sizes` are (train, validation, test) sizes in **records** (parquet rows, i.e. persona-expanded rows).
    `options` declares the build options the dataset accepts with their defaults (e.g. `max_digits`); when it is
    non-empty, `quirky.datasets.build` rejects unknown option names, coerces values to the default's type and
    passes the completed mapping as `BuildRequest.options`.  An empty mapping means "no declared options": any
    `--option` is passed through unchecked.
    """

    name: str
    arg_names: tuple[str, ...]
    templates: tuple[Template, ...]
    statement_templates: tuple[StatementTemplate, ...]
    build_base: Callable[[BuildRequest], pd.DataFrame]
    description: str
    alice_rule: str
    bob_rule: str
    difficulty_rule: str
    needs_source: bool = False
    source_help: str = ""
    default_sizes: tuple[int, int, int] = (8000, 1000, 1000)
    options: Mapping[str, object] = field(default_factory=dict)
