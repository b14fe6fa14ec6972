"""The transfer experiments: the grid of (train subset -> test subsets), layer selection (EIL) and PGR.

Entry point: `run_transfer(activations_dir, out_dir, TransferConfig(...))` (CLI: `quirky probe`).
"""

from __future__ import annotations

from quirky.experiments.grid import (
    DEFAULT_GRID,
    Experiment,
    default_grid,
    parse_experiment,
    parse_experiments,
)
from quirky.experiments.layer_selection import earliest_informative_layer
from quirky.experiments.pgr import PgrSpec, average_pgr, pgr

__all__ = [
    "DEFAULT_GRID",
    "Experiment",
    "PgrSpec",
    "average_pgr",
    "default_grid",
    "earliest_informative_layer",
    "parse_experiment",
    "parse_experiments",
    "pgr",
]
