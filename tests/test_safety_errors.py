"""Every user-fixable error is one line naming the file and the fix, never a traceback, and changes nothing:
damaged parquet, JSON, safetensors, adapter and config files given to each command (`--debug` shows the
traceback)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_experiments import _cfg, make_split
from test_finetune import save_tiny_model, write_toy_dataset
from test_safety_outdir import assert_one_line_error, run_cli, snapshot

from quirky.experiments.transfer import run_transfer


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy dataset, two stores, a finished probe output and a tiny model, made once."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("good")
    write_toy_dataset(root / "ds", n_questions=12)
    make_split(root / "act" / "validation", 40, 0)
    make_split(root / "act" / "test", 40, 1)
    run_transfer(root / "act", root / "probes", _cfg(methods=("lr",), experiments=("A->A,B", "AE->AE,BH")))
    save_tiny_model(root / "model")
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def drop_column(path: Path) -> None:
    pd.read_parquet(path).drop(columns=["alice_label"]).to_parquet(path)


def set_json(path: Path, text: str) -> None:
    path.write_text(text)


def first_chunk(root: Path) -> Path:
    return sorted((root / "act" / "test").glob("chunk-*.safetensors"))[0]


def adapter_dir(root: Path, config: str, weights: bool) -> Path:
    a = root / "adapter"
    a.mkdir()
    (a / "adapter_config.json").write_text(config)
    if weights:
        (a / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    return a


EXTRACT = ["extract", "--model", "{r}/model", "--dataset", "{r}/ds", "--split", "test", "--out", "{r}/st"]
EXTRACT_WITH_ADAPTER = [*EXTRACT, "--adapter", "{r}/adapter"]
PROBE = ["--n-boot", "5", "-q", "-m", "lr", "-e", "A->A,B"]
LORA = json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"], "base_model_name_or_path": "x"})

# name -> (damage the copy, the command (paths relative to the copy), fragments of the one-line message)
CASES: dict[str, tuple[Callable[[Path], object], list[str], tuple[str, ...]]] = {
    "truncated dataset split": (
        lambda r: truncate(r / "ds" / "train.parquet"),
        ["datasets", "show", "{r}/ds"],
        ("train.parquet", "not a readable parquet file"),
    ),
    "dataset split that is not parquet": (
        lambda r: set_json(r / "ds" / "test.parquet", "hello"),
        ["datasets", "show", "{r}/ds"],
        ("test.parquet", "not a readable parquet file"),
    ),
    "dataset split missing a column": (
        lambda r: drop_column(r / "ds" / "train.parquet"),
        ["datasets", "show", "{r}/ds"],
        ("lacks the column(s) alice_label",),
    ),
    "bad dataset.json": (
        lambda r: set_json(r / "ds" / "dataset.json", "{bad"),
        ["datasets", "show", "{r}/ds"],
        ("dataset.json is not valid JSON",),
    ),
    "bad store.json": (
        lambda r: set_json(r / "act" / "test" / "store.json", "{bad"),
        ["extract", "info", "{r}/act/test"],
        ("store.json is not valid JSON",),
    ),
    "store.json with malformed fields": (
        lambda r: set_json(
            r / "act" / "test" / "store.json",
            json.dumps({**json.loads((r / "act" / "test" / "store.json").read_text()), "chunks": 5}),
        ),
        ["extract", "info", "{r}/act/test"],
        ("store.json is damaged",),
    ),
    "truncated manifest": (
        lambda r: truncate(r / "act" / "test" / "manifest.parquet"),
        ["extract", "info", "{r}/act/test"],
        ("manifest.parquet is not a readable parquet file",),
    ),
    "truncated store chunk": (
        lambda r: truncate(first_chunk(r)),
        ["probe", "--activations", "{r}/act", "--out", "{r}/p2", *PROBE],
        ("chunk-00000.safetensors", "truncated", "re-extract"),
    ),
    "bad probe summary.json": (
        lambda r: set_json(r / "probes" / "summary.json", "[]"),
        ["probe", "show", "{r}/probes"],
        ("summary.json is not a probe summary",),
    ),
    "bad probe run.json": (
        lambda r: set_json(r / "probes" / "run.json", "{bad"),
        ["anomaly", "--probes", "{r}/probes", "--out", "{r}/an"],
        ("run.json is not valid JSON",),
    ),
    "truncated probe scores": (
        lambda r: truncate(r / "probes" / "scores" / "AE" / "lr.safetensors"),
        ["anomaly", "--probes", "{r}/probes", "--out", "{r}/an", "--n-boot", "5"],
        ("lr.safetensors is", "rerun `quirky probe`"),
    ),
    "adapter_config.json that is not JSON": (
        lambda r: adapter_dir(r, "{bad", weights=True),
        EXTRACT_WITH_ADAPTER,
        ("adapter_config.json is not valid JSON",),
    ),
    "adapter without weights": (
        lambda r: adapter_dir(r, LORA, weights=False),
        EXTRACT_WITH_ADAPTER,
        ("has no adapter weights",),
    ),
    "truncated model weights": (
        lambda r: truncate(r / "model" / "model.safetensors"),
        EXTRACT,
        ("could not load model",),
    ),
    "bad run.json in a finetuning output": (
        lambda r: ((r / "ft").mkdir(), set_json(r / "ft" / "run.json", "{bad")),
        ["finetune", "--model", "{r}/model", "--dataset", "{r}/ds", "--out", "{r}/ft", "--steps", "1"],
        ("run.json is not valid JSON",),
    ),
    "malformed YAML config": (
        lambda r: set_json(r / "c.yaml", "models: [a\n  b: :\n"),
        ["run", "{r}/c.yaml"],
        ("c.yaml is not valid YAML",),
    ),
    "unwritable --out": (
        lambda r: None,
        [
            "datasets",
            "build",
            "addition",
            "--out",
            "/proc/quirky-no/ds",
            "--n-train",
            "2",
            "--n-val",
            "2",
            "--n-test",
            "2",
        ],
        ("cannot create /proc/quirky-no", "writable --out"),
    ),
    "--out below a file": (
        lambda r: set_json(r / "f", "x"),
        [
            "datasets",
            "build",
            "addition",
            "--out",
            "{r}/f/x",
            "--n-train",
            "2",
            "--n-val",
            "2",
            "--n-test",
            "2",
        ],
        ("writable --out",),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_line_and_nothing_changed(case: str, good: Path, tmp_path: Path, capsys) -> None:
    damage, argv, fragments = CASES[case]
    root = tmp_path / "copy"
    shutil.copytree(good, root)
    damage(root)
    before = snapshot(root)
    code, err = run_cli([a.replace("{r}", str(root)) for a in argv], capsys)
    assert_one_line_error(code, err, *fragments)
    assert snapshot(root) == before


def test_debug_shows_the_traceback(good: Path, tmp_path: Path) -> None:
    from quirky.cli import main
    from quirky.errors import QuirkyError

    root = tmp_path / "copy"
    shutil.copytree(good, root)
    truncate(root / "ds" / "train.parquet")
    with pytest.raises(QuirkyError, match="not a readable parquet file"):
        main(["datasets", "show", str(root / "ds"), "--debug"])


def test_an_unexpected_error_is_one_line_too(monkeypatch, capsys) -> None:
    from quirky.datasets import cli as datasets_cli

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("something deep\ninside a library")

    monkeypatch.setattr(datasets_cli, "available_specs", boom)
    code, err = run_cli(["datasets", "list"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "RuntimeError: something deep inside a library" in lines[0]
    assert "--debug" in lines[0] and "Traceback" not in err


def test_a_damaged_probe_part_is_recomputed_not_trusted(tmp_path: Path) -> None:
    make_split(tmp_path / "act" / "validation", 40, 0)
    make_split(tmp_path / "act" / "test", 40, 1)
    cfg = _cfg(methods=("lr",), experiments=("A->A,B",))
    first = run_transfer(tmp_path / "act", tmp_path / "out", cfg)
    truncate(tmp_path / "out" / "parts" / "lr" / "A.parquet")
    logs: list[str] = []
    again = run_transfer(tmp_path / "act", tmp_path / "out", cfg, log=logs.append)
    assert not any("done earlier" in m for m in logs if m.startswith("lr"))
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
