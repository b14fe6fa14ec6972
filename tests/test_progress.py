"""Progress display: a bar with counts and ETA on a terminal, nothing in logs or under --quiet; and the real
pipeline (finetuning steps, the probe grid, the run's stages) drawing it."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from quirky import progress
from quirky.progress import Bar

ETA = re.compile(r"\d\d:\d\d<\d\d:\d\d")  # tqdm's [elapsed<remaining]


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, and keeps what was drawn."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    """Progress on, and a terminal to draw on (each test installs it as sys.stderr itself: pytest's output
    capture replaces sys.stderr again after the fixtures have run)."""
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(progress, "_quiet", False)
    return Terminal()


def test_bar_counts_with_eta_on_a_terminal(terminal: Terminal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", terminal)
    with Bar(3, "work", unit="step") as bar:
        assert bar.active
        for _ in range(3):
            bar.update(1)
        bar.note("loss 0.125")
    out = terminal.getvalue()
    assert "work" in out and "3/3" in out and "loss 0.125" in out
    assert ETA.search(out), out


def test_begin_counts_the_previous_item(terminal: Terminal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = Bar(3, "grid", unit="probe")
    for label in ("lr A->B", "lda A->B", "ccs A->B"):
        bar.begin(label)
    assert bar._bar.n == 2  # the third is still running
    bar.close()
    assert "3/3" in terminal.getvalue()
    # an item that raises is not counted as finished
    with pytest.raises(RuntimeError), Bar(2, "failing") as failing:
        failing.begin("first")
        failing.begin("second")
        raise RuntimeError
    assert "1/2" in terminal.getvalue().split("failing")[-1]


def test_log_lines_clear_the_bar_and_redraw_it(terminal: Terminal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", terminal)
    seen: list[tuple[str, str]] = []
    log = progress.around_bars(lambda message: seen.append((message, terminal.getvalue())))
    with Bar(4, "work") as bar:
        bar.update(1)
        before = terminal.getvalue()
        log("evaluation at step 1")
        after = terminal.getvalue()
    (message, at_print) = seen[0]
    assert message == "evaluation at step 1"
    cleared = at_print[len(before) :]  # drawn between the call and the line: the bar erased
    assert "\r" in cleared and cleared.strip() == ""
    assert "1/4" in after[len(at_print) :]  # and drawn again after it
    progress.set_quiet(True)
    quiet: list[str] = []
    progress.around_bars(quiet.append)("plain")
    assert quiet == ["plain"]


def test_silent_under_quiet_env_and_logs(terminal: Terminal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", terminal)
    progress.set_quiet(True)
    with Bar(2, "quiet") as bar:
        bar.update(2)
    assert not bar.active and terminal.getvalue() == ""
    progress.set_quiet(False)
    monkeypatch.setenv(progress.ENV, "0")
    with Bar(2, "env") as bar:
        bar.update(2)
    assert not bar.active and terminal.getvalue() == ""
    monkeypatch.delenv(progress.ENV)
    log = io.StringIO()  # a log file: not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    with Bar(2, "log") as bar:
        bar.update(2)
    assert not bar.active and log.getvalue() == ""
    assert Bar(2, "per call", quiet=True).active is False


def test_the_pipeline_shows_stage_dataset_model_finetune_steps_and_probe_grid(
    terminal: Terminal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real (tiny) `quirky run`: the run's bar goes through every stage of the job with ETA, the finetuning
    bar counts its steps, the probe grid its methods x experiments; a cached re-run under --quiet draws nothing."""
    monkeypatch.setattr(sys, "stderr", terminal)
    from test_pipeline import save_tiny, tiny_config

    from quirky.experiments.transfer import TransferConfig, experiments_for
    from quirky.pipeline.config import config_from_dict
    from quirky.pipeline.run import run_pipeline

    model = save_tiny(tmp_path / "llama", "llama")
    cfg = config_from_dict(tiny_config(tmp_path, [str(model)], ["addition"]))
    run_pipeline(cfg, log=lambda _m: None)
    out = terminal.getvalue()
    # the run: 5 stages (finetune, extract, probe, anomaly, intervene) of one job, the last one named
    assert "quirky run" in out and "5/5" in out and "intervene · addition · llama" in out
    assert ETA.search(out)
    # finetuning: 2 optimizer steps
    assert "finetune llama" in out and re.search(r"finetune llama: +\d+%\|.*\| \d/2 ", out)
    # the probe grid: every (method, experiment) unit of the configured methods
    units = sum(len(e) for e in experiments_for(TransferConfig(methods=tuple(cfg.probe.methods))).values())
    assert re.search(rf"probe grid addition: +\d+%\|.*\| \d+/{units} ", out), out[-2000:]
    # --quiet: a cached re-run draws nothing
    terminal.seek(0)
    terminal.truncate()
    progress.set_quiet(True)
    run_pipeline(cfg, log=lambda _m: None)
    assert terminal.getvalue() == ""
