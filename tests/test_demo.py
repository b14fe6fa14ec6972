"""`quirky demo --quick`: every stage on the real embedded SmolLM2 model (slow; CI runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_quick_runs_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "quirky.cli", "demo", "--quick", "--out", str(out)]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "headline numbers" in proc.stdout
    record = json.loads((out / "run.json").read_text())
    (job,) = record["jobs"]
    assert set(job["timings_s"]) == {"finetune", "extract", "probe", "anomaly", "intervene"}
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert {"datasets", "finetuning", "probes", "transfer", "anomaly", "interventions"} <= set(
        summary["sections"]
    )
    html = (out / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html
    # The LM's own log-odds were scored against both personas' labels on the test split.
    probe_summary = json.loads(next((out / "probes").rglob("summary.json")).read_text())
    lm = probe_summary["lm"]
    assert 0.0 <= lm["A"]["all"]["alice_label"] <= 1.0 and 0.0 <= lm["B"]["all"]["bob_label"] <= 1.0
    # A cached re-run recomputes nothing and is fast.
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((out / "run.json").read_text())
    assert sum(rerun["jobs"][0]["timings_s"].values()) < 60
