"""The finetuning stage's reader (`quirky.finetune.output.FinetuneOutput`) on outputs written by the real stage."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_finetune import FAST, save_tiny_model, write_toy_dataset

from quirky.errors import QuirkyError
from quirky.finetune import FinetuneConfig, finetune
from quirky.finetune.output import ARCHIVED, METRICS_JSON, OWNED, RESULT_JSON, FinetuneOutput
from quirky.outdir import KINDS, MARKER


def _load(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three outputs of the real stage on a tiny model: a merged LoRA run, a full finetune, a stopped run."""
    root = tmp_path_factory.mktemp("ft-output")
    model = str(save_tiny_model(root / "llama"))
    data = write_toy_dataset(root / "data")
    lora = FinetuneConfig(**{**FAST, "steps": 4, "save_every": 2})
    full = FinetuneConfig(**{**FAST, "lora_rank": 0, "lr": 1e-3, "steps": 2})
    finetune(model, data, root / "lora", lora, merge=True, log=None)
    finetune(model, data, root / "full", full, log=None)
    finetune(model, data, root / "stopped", lora, stop_after=2, log=None)
    return {"lora": root / "lora", "full": root / "full", "stopped": root / "stopped", "root": root}


def test_a_finished_run_reads_back_what_the_stage_wrote(outputs: dict[str, Path]) -> None:
    path = outputs["lora"]
    out = FinetuneOutput.open(path)
    assert FinetuneOutput.exists(path) and out.finished
    # every record is the JSON the stage wrote, read here independently
    metrics = _load(path / "metrics.json")
    done = _load(path / "finetune.json")
    assert out.metrics == metrics and out.history == metrics["history"]
    assert [r["step"] for r in out.history] == [1, 2, 4] and metrics["final"]["step"] == 4
    assert out.info == done and out.final == done["final"] and out.fingerprint == done["fingerprint"]
    assert out.training_config == _load(path / "training_config.json")
    assert out.timing == _load(path / "timing.json")
    assert out.kind == "lora" and out.merged and out.model_name == done["model_name"]
    assert out.adapter_dir == path and (path / "adapter_config.json").is_file()
    assert out.model_dir == path / "merged" and (out.model_dir / "config.json").is_file()


def test_each_output_returns_its_own_metrics(outputs: dict[str, Path]) -> None:
    # the full run trained 2 steps, the LoRA run 4: a reader mixing up files or runs would fail here
    lora, full = FinetuneOutput.open(outputs["lora"]), FinetuneOutput.open(outputs["full"])
    assert full.metrics == _load(outputs["full"] / "metrics.json") != lora.metrics
    assert full.metrics is not None and full.metrics["final"]["step"] == 2
    assert full.final["step"] == 2 and full.info["total_steps"] == 2
    assert full.kind == "full" and not full.merged
    assert full.adapter_dir is None and full.model_dir == outputs["full"]


def test_a_stopped_run_is_an_unfinished_output_with_its_live_metrics(outputs: dict[str, Path]) -> None:
    path = outputs["stopped"]
    out = FinetuneOutput.open(path)
    assert not out.finished and not FinetuneOutput.exists(path) and out.info == {}
    assert (
        out.fingerprint
        == _load(path / "run.json")["fingerprint"]
        == FinetuneOutput.open(outputs["lora"]).fingerprint
    )
    assert out.metrics == _load(path / "metrics.json") and [r["step"] for r in out.history] == [1, 2]
    assert out.kind is None and out.adapter_dir is None and out.model_dir is None
    assert out.training_config is None and out.timing is None


def test_the_one_list_of_files_covers_what_the_stage_writes(outputs: dict[str, Path]) -> None:
    assert KINDS["finetune"].owned == OWNED and RESULT_JSON in KINDS["finetune"].signature
    for name in ("lora", "full", "stopped"):
        for entry in outputs[name].iterdir():
            if entry.name != MARKER:
                assert any(fnmatch.fnmatch(entry.name, p) for p in OWNED), entry
    assert all((outputs["lora"] / f).is_file() for f in ARCHIVED)


def test_the_results_archive_and_the_report_read_through_it(outputs: dict[str, Path], tmp_path: Path) -> None:
    from quirky.report.sections import finetuning
    from quirky.results.archive import Archive, collect
    from quirky.rundir import discover

    run = tmp_path / "run"
    shutil.copytree(outputs["lora"], run / "finetune" / "tiny__addition")
    shutil.copytree(outputs["stopped"], run / "finetune" / "tiny__stopped")
    archive = collect(run, tmp_path / "archive")
    kept = archive / "finetune" / "tiny__addition"
    assert sorted(p.name for p in kept.iterdir()) == sorted(ARCHIVED)
    assert not (archive / "finetune" / "tiny__stopped").exists()  # unfinished: nothing to quote
    for f in ARCHIVED:
        assert (kept / f).read_bytes() == (outputs["lora"] / f).read_bytes()
    assert Archive.open(archive).finetune_metrics() == {("tiny", "addition"): _load(kept / METRICS_JSON)}
    # the report shows every run with a curve, the stopped one included
    _, data = finetuning(discover(run))
    assert [(r["model"], r["dataset"], r["step"]) for r in data["final"]] == [
        ("tiny", "addition", 4),
        ("tiny", "stopped", 2),
    ]


@pytest.mark.parametrize("kind", ["empty", "probe", "file", "missing"])
def test_a_directory_that_is_not_a_finetune_output_is_one_clear_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / kind
    if kind == "empty":
        path.mkdir()
    elif kind == "probe":  # another stage's run.json is not a finetuning run
        path.mkdir()
        (path / "run.json").write_text(json.dumps({"activations": "act", "methods": ["lr"]}))
    elif kind == "file":
        path.write_text("x")
    with pytest.raises(QuirkyError) as e:
        FinetuneOutput.open(path)
    message = str(e.value)
    assert "\n" not in message and f"{path} is not a finetuning output" in message
    assert not FinetuneOutput.exists(path)
