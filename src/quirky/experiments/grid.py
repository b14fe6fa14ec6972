"""Experiment strings and the reference's default transfer grid.

An experiment is written `TRAIN[@LABEL]->TEST1,TEST2,...`, e.g. `A->A,B,AH,BH` or `all@alice_label->all,BH`:
fit the probe on the TRAIN subset of the training split with labels from column LABEL (default `label`, the
persona's own label, as in the reference), then score every TEST subset of the test split.  Subsets are
`quirky.subsets.SUBSETS` (`all, A, B, AE, AH, BE, BH`).
"""

from __future__ import annotations

from dataclasses import dataclass

from quirky.errors import QuirkyError
from quirky.subsets import SUBSETS

LABEL_COLUMNS: tuple[str, ...] = ("label", "alice_label", "bob_label")


def train_tag(train: str, train_label: str = "label") -> str:
    """An experiment's training tag: the subset, with `@LABEL` when the labels are not the persona's own."""
    return train if train_label == "label" else f"{train}@{train_label}"


def split_tag(tag: str) -> tuple[str, str]:
    """(subset, label column) of a training tag: `all@alice_label` -> (`all`, `alice_label`), `A` -> (`A`, `label`)."""
    train, _, label = tag.partition("@")
    return train, label or "label"


@dataclass(frozen=True)
class Experiment:
    """Train on `train` (labels from `train_label`), evaluate on each of `tests`."""

    train: str
    tests: tuple[str, ...]
    train_label: str = "label"

    @property
    def tag(self) -> str:
        """Directory-safe name of the training set: `A`, or `all@alice_label` for a non-default label column."""
        return train_tag(self.train, self.train_label)

    def with_source(self) -> Experiment:
        """The same experiment with the training subset also among the tests (EIL needs s -> s)."""
        if self.train in self.tests:
            return self
        return Experiment(self.train, (self.train, *self.tests), self.train_label)

    def __str__(self) -> str:
        return f"{self.tag}->{','.join(self.tests)}"


def _check_subset(name: str, text: str) -> str:
    if name not in SUBSETS:
        raise QuirkyError(f"experiment {text!r}: unknown subset {name!r}; subsets are {', '.join(SUBSETS)}")
    return name


def parse_experiment(text: str) -> Experiment:
    """Parse `TRAIN[@LABEL]->T1,T2,...` (spaces ignored); a QuirkyError says what is malformed."""
    compact = "".join(text.split())
    if compact.count("->") != 1:
        raise QuirkyError(f"experiment {text!r} must look like 'TRAIN->TEST1,TEST2' (e.g. 'A->A,B,AH,BH')")
    left, right = compact.split("->")
    train, label = split_tag(left)
    if label not in LABEL_COLUMNS:
        raise QuirkyError(
            f"experiment {text!r}: unknown label column {label!r}; use one of {', '.join(LABEL_COLUMNS)}"
        )
    tests = tuple(t for t in right.split(",") if t)
    if not tests:
        raise QuirkyError(f"experiment {text!r} names no test subset after '->'")
    if len(set(tests)) != len(tests):
        raise QuirkyError(f"experiment {text!r} repeats a test subset")
    return Experiment(_check_subset(train, text), tuple(_check_subset(t, text) for t in tests), label)


def parse_experiments(texts: list[str] | tuple[str, ...]) -> list[Experiment]:
    """Parse several experiments; each item may itself hold several separated by ';'.  Duplicates by training
    set are merged (their test lists united, in order)."""
    merged: dict[tuple[str, str], list[str]] = {}
    for text in texts:
        for part in text.split(";"):
            if part.strip():
                exp = parse_experiment(part)
                tests = merged.setdefault((exp.train, exp.train_label), [])
                tests.extend(t for t in exp.tests if t not in tests)
    return [Experiment(train, tuple(tests), label) for (train, label), tests in merged.items()]


_SUPERVISED = ("A->A,B,AH,BH", "B->B,A,BH", "AE->AE,AH,BE,BH")
_UNSUPERVISED = (*_SUPERVISED, "all@alice_label->all,BH")

# The original grid (`elk_generalization/elk/run_transfers.py` at `8f30c6d`), with every supervised method given
# the union of the per-method test lists (scoring an extra test subset costs one matrix product), plus all ->
# all,BH for the unsupervised methods (Alice labels are used only to resolve their sign) and AE -> AE,BH for the
# random baseline (on AE the persona label is Alice's).
DEFAULT_GRID: dict[str, tuple[str, ...]] = {
    "lr": _SUPERVISED,
    "lr-on-pair": _SUPERVISED,
    "mean-diff": _SUPERVISED,
    "mean-diff-on-pair": _SUPERVISED,
    "lda": _SUPERVISED,
    "ccs": _UNSUPERVISED,
    "crc": _UNSUPERVISED,
    "random": ("AE->AE,BH",),
}


def default_grid(methods: list[str] | tuple[str, ...]) -> dict[str, list[Experiment]]:
    """The default experiments of each method (QuirkyError for a method without one)."""
    out = {}
    for m in methods:
        if m not in DEFAULT_GRID:
            raise QuirkyError(f"no default experiments for method {m!r}; pass --experiments")
        out[m] = parse_experiments(list(DEFAULT_GRID[m]))
    return out
