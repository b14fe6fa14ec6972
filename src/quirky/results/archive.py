"""The committed results archive: the small outputs behind every number in docs/RESULTS.md.

Why an archive: a run directory holds gigabytes (models, activations, scores) that cannot live in git, yet every
number the docs quote must be re-derivable by anyone.  `collect` copies the small per-stage summaries of a run
into `results/<name>/` in the run directory's own layout, so `quirky report` reads an archive like a run, and
`quirky.results.tables` builds the Markdown tables of docs/RESULTS.md from it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from quirky.anomaly import output as anomaly_output
from quirky.datasets.layout import META_FILE
from quirky.errors import QuirkyError
from quirky.experiments.probe_run import RESULTS, SMALL_FILES, ProbeRun
from quirky.fileio import read_json, write_json
from quirky.finetune.output import FinetuneOutput
from quirky.interventions import output as intervention_output
from quirky.rundir import FINETUNE, RunDir, RunLayout, discover

#: The marker that says a directory is a results archive written by `collect` (the only kind it overwrites).
MARKER = "results-archive.json"
#: The probe stage's per-layer results (every method, layer and test subset, with CIs), archived for all examples
#: against the truth (Alice's labels), plus the LM's own rows against every label column (`TRIM`): the other
#: filters and label columns would multiply the archive's size by nine and no table reads them.
RESULT_ROWS = RESULTS
TRIM = "filter == all and (label_col == alice_label or method == lm)"
_TIME_FIELDS = {
    "User time (seconds)": "user_s",
    "System time (seconds)": "system_s",
    "Maximum resident set size (kbytes)": "max_rss_kb",
    "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall",
}


# ------------------------------------------------------------------------------------------------ collect
def collect(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, time_log: Path | None = None
) -> Path:
    """Copy the small outputs of `run_dir` into the archive `out` (new, empty, or an earlier archive)."""
    run = discover(run_dir)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise QuirkyError(
            f"{out} is not empty and is not a results archive (no {MARKER}); choose a new --out"
        )
    previous = _archived_files(out)
    out.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []

    def keep(src: Path, rel: Path) -> None:
        if src.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / rel)
            copied.append(rel.as_posix())

    archived = RunDir(Path())  # the archive's layout is the run's, relative to `out`
    keep(run.run_json, archived.run_json)
    for name, path in run.datasets.items():
        keep(path / META_FILE, archived.dataset_dir(name) / META_FILE)
    for path in run.finetune.values():
        if not FinetuneOutput.exists(path):  # unfinished (or replaced) finetuning: nothing to quote yet
            continue
        for f in FinetuneOutput.ARCHIVED:
            keep(path / f, Path(FINETUNE, path.name, f))  # the run's own directory name
    for (model, dataset), path in run.probes.items():
        rel = archived.probes_dir(model, dataset)
        for f in SMALL_FILES:
            keep(path / f, rel / f)
        rows = ProbeRun(path).results()
        if rows is not None:
            lm = rows["method"] == "lm"
            rows = rows[(rows["filter"] == "all") & ((rows["label_col"] == "alice_label") | lm)]
            (out / rel).mkdir(parents=True, exist_ok=True)
            rows.reset_index(drop=True).to_parquet(out / rel / RESULT_ROWS, index=False)
            copied.append((rel / RESULT_ROWS).as_posix())
    for (model, dataset), path in run.anomaly.items():
        for f in anomaly_output.ARCHIVED:
            keep(path / f, archived.anomaly_dir(model, dataset) / f)
    for (model, dataset, name), path in run.interventions.items():
        for f in intervention_output.ARCHIVED:
            keep(path / f, archived.interventions_dir(model, dataset, name) / f)
    resources = parse_time_log(time_log) if time_log is not None else None
    if resources is not None:
        write_json(out / "resources.json", resources)
        copied.append("resources.json")
    marker = {
        "kind": "quirky-results",
        "source": str(run.root),
        "results_rows": TRIM,
        "files": sorted(copied),
    }
    write_json(out / MARKER, marker)
    _remove_stale(out, previous - set(copied))
    return out


def _archived_files(out: Path) -> set[str]:
    """The files an earlier `collect` wrote into `out`, as its marker lists them (none for a new archive)."""
    if not (out / MARKER).is_file():
        return set()
    files = read_json(out / MARKER).get("files", [])
    return {f for f in files if isinstance(f, str)}


def _remove_stale(out: Path, stale: set[str]) -> None:
    """Delete the files an earlier collect wrote that this one did not (a dataset or stage no longer in the run):
    left in place, the tables would quote results the run no longer has.  Only files listed in the archive's own
    marker are touched, never anything else a user keeps there; directories that end up empty go too."""
    root = out.resolve()
    for rel in sorted(stale):
        path = (out / rel).resolve()
        if root not in path.parents:  # a marker edited to point outside the archive: never follow it
            continue
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == root:
                break
            if not parent.is_dir():
                continue
            if any(parent.iterdir()):
                break
            parent.rmdir()


def parse_time_log(path: Path) -> dict[str, Any]:
    """Peak memory and CPU seconds of a whole run, from GNU time's `-v` report."""
    if not path.is_file():
        raise QuirkyError(
            f"time log {path} not found (write it with `/usr/bin/time -v quirky run ... 2> FILE`)"
        )
    found: dict[str, Any] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key in _TIME_FIELDS:
            found[_TIME_FIELDS[key]] = value.strip()
    if "max_rss_kb" not in found:
        raise QuirkyError(f"{path} holds no GNU time -v report ('Maximum resident set size' is missing)")
    return {
        "peak_rss_gib": round(int(found["max_rss_kb"]) / 2**20, 2),
        "cpu_s": round(float(found.get("user_s", "nan")) + float(found.get("system_s", "nan")), 1),
        "wall": found.get("wall"),
    }


# ------------------------------------------------------------------------------------------------- read
@dataclass
class Archive:
    """A results archive (or a run directory: the layout is the same), read once."""

    root: Path
    layout: RunLayout
    run: dict[str, Any]
    # each stacked probe-stage file is read once, however many tables use it
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Archive:
        layout = discover(path)
        run = read_json(layout.run_json) if layout.run_json.is_file() else {}
        return cls(Path(path), layout, run)

    def datasets(self) -> list[str]:
        """Datasets in the run's configured order (the paper's), then any others."""
        order = list(self.run.get("config", {}).get("datasets", {}).get("names", []))
        found = sorted({ds for _, ds in self.layout.probes})
        return [d for d in order if d in found] + [d for d in found if d not in order]

    def probe_frame(self, name: str) -> pd.DataFrame:
        """One probe-stage file (`pgr.csv`, `eil.csv`, `results.parquet`) of every (model, dataset), stacked."""
        if name not in self._frames:
            self._frames[name] = self._read_probe_files(name)
        return self._frames[name]

    def _read_probe_files(self, name: str) -> pd.DataFrame:
        frames = []
        for _, path in sorted(self.layout.probes.items()):
            table = ProbeRun(path).table(name)
            if table is not None:
                frames.append(table)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def anomaly_results(self) -> pd.DataFrame:
        rows = []
        for _, path in sorted(self.layout.anomaly.items()):
            for r in anomaly_output.AnomalyOutput.open(path).results:
                rows.append({k: v for k, v in r.items() if k != "source"})
        return pd.DataFrame(rows)

    def finetune_metrics(self) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for key, path in sorted(self.layout.finetune.items()):
            if FinetuneOutput.exists(path):  # finished runs only
                metrics = FinetuneOutput.open(path).metrics
                if metrics is not None:
                    out[key] = metrics
        return out
