"""`quirky results collect`: the archive holds exactly what the run holds now.  Re-collecting after a dataset
left the run removes that dataset's earlier files (stale numbers would otherwise reach the tables), and touches
nothing that the archive's own marker does not list."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from quirky.results.archive import MARKER, collect

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_recollect_removes_what_left_the_run_and_keeps_the_rest(tmp_path: Path) -> None:
    # a run directory with the committed archive's layout and files (an archive is a run's small outputs)
    run = tmp_path / "run"
    shutil.copytree(REPO / "results" / "paper-grid", run)
    (run / MARKER).unlink()
    out = collect(run, tmp_path / "archive")
    first = _files(out)
    listed = set(json.loads((out / MARKER).read_text())["files"])
    assert "probes/smollm2/addition/summary.json" in listed
    assert listed == set(first) - {MARKER}

    (out / "notes.txt").write_text("mine")  # a user's file in the archive: never the archive's to delete
    shutil.rmtree(run / "probes" / "smollm2" / "addition")
    shutil.rmtree(run / "anomaly" / "smollm2" / "addition")
    collect(run, out)
    second = _files(out)

    gone = {f for f in first if f.startswith(("probes/smollm2/addition/", "anomaly/smollm2/addition/"))}
    assert gone and not gone & set(second)
    assert not (out / "probes" / "smollm2" / "addition").exists()  # emptied directories go too
    assert second["notes.txt"] == b"mine"
    for name, data in first.items():  # everything else is as before
        if name not in gone and name != MARKER:
            assert second[name] == data, name
    assert set(json.loads((out / MARKER).read_text())["files"]) == listed - gone
