"""`quirky probe` on edge cases a careless user hits: a test subset of exactly one example, and an interrupted
re-run with other settings (its `run.json` must never sit beside the previous settings' `summary.json`)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_experiments import _cfg, make_split

from quirky.cli import main
from quirky.experiments import transfer
from quirky.experiments.transfer import run_transfer
from quirky.probes.metrics import auroc


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_auroc_of_one_example_is_nan_not_a_crash() -> None:
    assert torch.isnan(auroc(torch.tensor([[0.3]]), torch.tensor([1.0]))).all()
    assert torch.isnan(auroc(torch.tensor([[0.3], [0.1]]), torch.tensor([0.0]))).all()


def test_max_test_one_scores_every_subset(tmp_path) -> None:
    make_split(tmp_path / "act" / "validation", 48, 0)
    make_split(tmp_path / "act" / "test", 48, 1)
    run_transfer(
        tmp_path / "act", tmp_path / "out", _cfg(methods=("lr",), experiments=("A->A,B",), max_test=1)
    )
    res = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(res.n) <= {0, 1} and res.auroc.isna().all()
    assert (res.note != "").all()


def test_interrupted_rerun_never_shows_the_old_summary(tmp_path, monkeypatch, capsys) -> None:
    act = tmp_path / "act"
    make_split(act / "validation", 80, 0)
    make_split(act / "test", 80, 1)
    out = tmp_path / "out"
    run_transfer(act, out, _cfg(methods=("lr",), experiments=("A->A,B",)))
    assert (out / "summary.json").is_file()

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(transfer, "build_summary", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_transfer(act, out, _cfg(methods=("mean-diff",), experiments=("A->A,B",)))
    monkeypatch.undo()
    assert not (out / "summary.json").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["probe", "show", str(out)])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
    # the same settings again finish the run, and its summary matches its run.json
    summary = run_transfer(act, out, _cfg(methods=("mean-diff",), experiments=("A->A,B",)))
    assert set(summary["eil"]) == {"mean-diff"}
