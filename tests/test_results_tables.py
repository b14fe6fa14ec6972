"""docs/RESULTS.md against the committed results archive (results/), and the archive's own rules.

The block test fails whenever a committed table and the committed outputs disagree; the recomputation tests
derive a few headline numbers straight from the archived CSV/JSON files with the paper's formulas written out
here, independently of `quirky.results` and `quirky.experiments.pgr`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quirky.results.tables import update_doc

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RESULTS.md"
RESULTS = ROOT / "results"
GRID = RESULTS / "paper-grid"

needs_archive = pytest.mark.skipif(
    not (GRID / "results-archive.json").is_file(), reason="no committed results/paper-grid"
)


@needs_archive
def test_committed_tables_match_committed_outputs() -> None:
    assert update_doc(DOC, RESULTS, check=True) == []


def _doc_block(name: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"<!-- quirky:{name} -->\n(.*?)\n<!-- /quirky:{name} -->", text, re.S)
    assert m, name
    return m.group(1)


def _table_row(block: str, first_cell: str, table_index: int) -> list[str]:
    tables = [t for t in block.split("\n\n") if t.startswith("|")]
    for line in tables[table_index].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


@needs_archive
def test_ae_bh_average_pgr_recomputed_from_the_archive() -> None:
    """(mean AUC - mean floor) / (mean ceiling - mean floor) over datasets, population left out."""
    frames = [pd.read_csv(p) for p in sorted((GRID / "probes").glob("*/*/pgr.csv"))]
    pgr = pd.concat(frames)
    lr = pgr[(pgr["table"] == "AE->BH") & (pgr["method"] == "lr") & (pgr["train"] == "AE")]
    lr = lr[lr["dataset"] != "population"]
    auc, floor, ceiling = lr["auc"].mean(), lr["floor"].mean(), lr["ceiling"].mean()
    expected = (auc - floor) / (ceiling - floor)
    header = _table_row(_doc_block("ae-bh"), "dataset", 1)
    row = _table_row(_doc_block("ae-bh"), "**average** (excl. population)", 1)
    assert float(row[header.index("lr")]) == pytest.approx(expected, abs=0.005)
    assert float(row[1]) == pytest.approx(floor, abs=0.005)


@needs_archive
def test_lm_auroc_recomputed_from_the_archive() -> None:
    """The LM table's Alice cell is the archived lm row's AUROC and CI, for every dataset."""
    block = _doc_block("lm")
    for path in sorted((GRID / "probes").glob("*/*/results.parquet")):
        rows = pd.read_parquet(path)
        r = rows[(rows["method"] == "lm") & (rows["test"] == "A") & (rows["label_col"] == "alice_label")]
        r = r[r["filter"] == "all"].iloc[0]
        cell = _table_row(block, path.parent.name, 0)[1]
        assert cell == f"{r['auroc']:.2f} [{r['auroc_lo']:.2f}, {r['auroc_hi']:.2f}]"


@needs_archive
def test_anomaly_average_recomputed_from_the_archive() -> None:
    docs = [json.loads(p.read_text()) for p in sorted((GRID / "anomaly").glob("*/*/anomaly.json"))]
    rows = [r for d in docs for r in d["results"] if r["detector"] == "gaussian" and not r["excluded"]]
    lr = [r["auroc"] for r in rows if r["method"] == "lr"]
    block = _doc_block("anomaly")
    header = _table_row(block, "dataset", 0)
    row = _table_row(block, "**average**", 0)
    assert float(row[header.index("lr")]) == pytest.approx(float(np.mean(lr)), abs=0.005)
