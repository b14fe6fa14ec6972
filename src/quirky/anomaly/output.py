"""The anomaly stage's output (`quirky anomaly --out`, a run's `anomaly/<model>/<dataset>/`) and its reader.

The stage owns both sides: `runner.run_anomaly` writes these files, and the report, the run-directory discovery
and the results archive read them through `AnomalyOutput`, never by file name.  Light on imports (json and
pandas only), so the report can read results without loading the detectors' libraries.
"""

from __future__ import annotations

from typing import Any, ClassVar

from quirky.stage_output import JsonOutput

RESULT_JSON = "anomaly.json"
SCORES = "scores.parquet"
#: the files a results archive keeps (the per-example scores are large and regenerable)
ARCHIVED = (RESULT_JSON,)


class AnomalyOutput(JsonOutput):
    """One finished anomaly output: `doc` is anomaly.json (config, fingerprint, results, skipped, summary)."""

    RESULT_JSON: ClassVar[str] = RESULT_JSON

    @property
    def results(self) -> list[dict[str, Any]]:
        """One record per (probe run, method, detector): auroc, auroc_ci, recall_at_fpr, n_*, excluded, ..."""
        return list(self.doc.get("results", []))

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """(model, dataset, method) with no probe on the trusted subset, and why."""
        return list(self.doc.get("skipped", []))

    @property
    def summary(self) -> dict[str, Any] | None:
        return self.doc.get("summary")

    def scores(self) -> Any:
        """Every example's anomaly score (a pandas frame), or None when the file is absent (an archive)."""
        f = self.path / SCORES
        if not f.is_file():
            return None
        import pandas as pd

        return pd.read_parquet(f)
