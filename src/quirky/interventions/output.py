"""The interventions stage's output (`quirky intervene --out`, a run's
`interventions/<model>/<dataset>/<method>__<train>/`) and its reader.

`runner.run_intervention` writes these files; the report, the run-directory discovery and the results archive read
them through `InterventionOutput`, never by file name.  No torch import: reading results needs none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quirky.fileio import read_json

RESULT_JSON = "interventions.json"
LOG_ODDS = "log_odds.parquet"
#: the files a results archive keeps (the per-example log-odds are large and regenerable)
ARCHIVED = (RESULT_JSON,)


@dataclass
class InterventionOutput:
    """One finished intervention output: `doc` is interventions.json (config, clean, layers, ...)."""

    path: Path
    doc: dict[str, Any]

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        return (Path(path) / RESULT_JSON).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> InterventionOutput:
        path = Path(path)
        return cls(path=path, doc=read_json(path / RESULT_JSON))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.doc.get("config", {}))

    @property
    def clean(self) -> dict[str, Any]:
        """The un-intervened LM's AUROCs against Alice's and Bob's labels."""
        return dict(self.doc.get("clean", {}))

    @property
    def layers(self) -> list[dict[str, Any]]:
        """One record per intervened layer: layer, auroc_alice, auroc_bob, flip rates, ..."""
        return list(self.doc.get("layers", []))
