"""The interventions stage's output (`quirky intervene --out`, a run's
`interventions/<model>/<dataset>/<method>__<train>/`) and its reader.

`runner.run_intervention` writes these files; the report, the run-directory discovery and the results archive read
them through `InterventionOutput`, never by file name.  No torch import: reading results needs none.
"""

from __future__ import annotations

from typing import Any, ClassVar

from quirky.stage_output import JsonOutput

RESULT_JSON = "interventions.json"
LOG_ODDS = "log_odds.parquet"
#: the files a results archive keeps (the per-example log-odds are large and regenerable)
ARCHIVED = (RESULT_JSON,)


class InterventionOutput(JsonOutput):
    """One finished intervention output: `doc` is interventions.json (config, clean, layers, ...)."""

    RESULT_JSON: ClassVar[str] = RESULT_JSON

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
