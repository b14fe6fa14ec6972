"""scripts/gpu_check.py: its CPU path end to end on a tiny random model, and its batched == unbatched check."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
pytestmark = pytest.mark.usefixtures("one_blas_thread")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return load_script()


@pytest.fixture(scope="module")
def cpu_run(gpu_check: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the script's CPU path (`--device auto` on this CPU-only machine) on the tiny model."""
    root = tmp_path_factory.mktemp("gpu-check")
    out = root / "result.json"
    args = ["--device", "cpu" if torch.cuda.is_available() else "auto", "--tiny", "--threads", "1"]
    args += [
        "--methods",
        "lr,mean-diff",
        "--bootstrap",
        "10",
        "--work",
        str(root / "work"),
        "--out",
        str(out),
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = gpu_check.main(args)
    return {
        "rc": rc,
        "report": json.loads(out.read_text()),
        "work": root / "work",
        "printed": printed.getvalue(),
    }


def test_cpu_path_passes_and_reports_throughput(cpu_run: dict[str, Any], gpu_check: ModuleType) -> None:
    report = cpu_run["report"]
    assert cpu_run["rc"] == 0 and report["passed"] is True
    assert list(report["devices"]) == ["cpu"]  # auto fell back to the CPU (no GPU here)
    cpu = report["devices"]["cpu"]
    for key in gpu_check.THROUGHPUT_KEYS:
        assert isinstance(cpu[key], float) and math.isfinite(cpu[key]) and cpu[key] > 0, key
    check = cpu["batched_check"]
    assert check["passed"] and check["dtype"] == "float32" and check["tolerance"] == 1e-4
    assert check["max_rel"] <= 1e-4 and check["prompts"] >= 4
    assert check["prompt_tokens"][0] < check["prompt_tokens"][1]  # lengths differ: padding is exercised
    assert "duplicate" in check["strategies"]  # one padded batch against one by one
    assert cpu["finetune_lora"]["steps"] == 3 and cpu["finetune_lora"]["mixed_precision"] == "no"
    assert cpu["finetune_full"]["weights_dtype"] == "float32" and cpu["model_dtype"] == "float32"
    printed = cpu_run["printed"]
    assert "probe grid, s" in printed and "all checks passed" in printed


def test_a_perturbed_batched_row_fails_the_check(
    cpu_run: dict[str, Any], gpu_check: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quirky.extraction import forward
    from quirky.models import load_model

    work = cpu_run["work"]
    model, tokenizer = load_model(work / "tiny-llama", device="cpu")
    df = gpu_check.check_prompts(work / "data", 6)
    assert gpu_check.batched_check(model, tokenizer, df)["passed"]

    original = forward.forward_batch

    def perturbed(model: Any, prompts: list, *args: Any, **kwargs: Any) -> Any:
        res = original(model, prompts, *args, **kwargs)
        if len(prompts) > 1:  # only the batched pass: one row's states move by 1% of their norm
            res.hiddens[:, 1] += (
                0.01 * res.hiddens[:, 1].norm(dim=-1, keepdim=True) / res.hiddens.shape[-1] ** 0.5
            )
        return res

    monkeypatch.setattr(forward, "forward_batch", perturbed)
    check = gpu_check.batched_check(model, tokenizer, df)
    assert not check["passed"]
    assert check["max_rel"] > check["tolerance"]
    assert all(s["pair_rel"] <= 1e-4 for s in check["strategies"].values())  # only the hidden states moved


def test_tolerance_follows_the_dtype(gpu_check: ModuleType) -> None:
    assert gpu_check.TOLERANCE["float32"] == 1e-4 and gpu_check.TOLERANCE["bfloat16"] == 2e-2
    a = torch.ones(2, 3, 4)
    assert gpu_check.max_relative_error(a, a) == 0.0
    b = a.clone()
    b[1, 2, 0] += 0.2  # ||(0.2, 0, 0, 0)|| / ||(1, 1, 1, 1)|| = 0.1
    assert gpu_check.max_relative_error(b, a) == pytest.approx(0.1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_a_one_line_error(
    gpu_check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_check.main(["--device", "cuda", "--tiny", "--work", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # refused before any work


@pytest.mark.slow  # a second process and a second tiny run
def test_the_cpu_child_and_the_comparison_table(
    cpu_run: dict[str, Any], gpu_check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a GPU machine does after its CUDA run: the CPU run in a child that cannot see the GPU, then one table
    with both columns and the speed-ups (the CUDA column is faked from the CPU run's numbers)."""
    args = gpu_check.parse_args(
        ["--tiny", "--steps", "2", "--methods", "lr", "--bootstrap", "5", "--threads", "1"]
    )
    work = tmp_path / "work"
    data = gpu_check.build_data(work, args.n_train, args.prompts)
    model = str(gpu_check.save_tiny_model(work / "tiny-llama", data))
    cpu = gpu_check.run_cpu_child(args, model, work)
    assert cpu["device"] == "cpu" and cpu["passed"] and cpu["finetune_lora"]["steps"] == 2
    assert cpu["probe_grid"]["methods"] == ["lr"]

    fake_cuda = {**cpu, "device": "cuda", "gpu": "Fake GPU"}
    for key in gpu_check.THROUGHPUT_KEYS:
        fake_cuda[key] = cpu[key] / 4 if key == "probe_grid_s" else cpu[key] * 4
    speed = gpu_check.speedups(fake_cuda, cpu)
    assert speed == pytest.approx(dict.fromkeys(gpu_check.THROUGHPUT_KEYS, 4.0))
    gpu_check.print_table({"model": "tiny", "devices": {"cuda": fake_cuda, "cpu": cpu}, "speedup": speed})
    printed = capsys.readouterr().out
    assert "Fake GPU" in printed and "cuda / cpu" in printed and "4.0x" in printed


def test_an_earlier_run_in_the_work_directory_is_refused(gpu_check: ModuleType, tmp_path: Path) -> None:
    """Cached stages would make the timings meaningless, so a device's folder must be new."""
    (tmp_path / "cpu").mkdir()
    with pytest.raises(SystemExit, match="holds an earlier run"):
        gpu_check.run_device("cpu", "unused", tmp_path / "data", tmp_path, gpu_check.parse_args(["--tiny"]))
