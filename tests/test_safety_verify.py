"""Verify before trusting: non-finite LM log-odds are an error, content digests ignore safetensors' random header
order, and a model's fingerprint covers every byte of its weights (cached by path, size and mtime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from test_experiments import _cfg, make_split

from quirky.errors import QuirkyError
from quirky.experiments.transfer import run_transfer
from quirky.fileio import file_digest, safetensors_digest


def test_non_finite_lm_log_odds_are_an_error(tmp_path: Path) -> None:
    act = tmp_path / "act"
    make_split(act / "validation", 40, 0)
    make_split(act / "test", 40, 1)
    # a store damaged after it was written (write_store itself refuses non-finite values)
    chunk = sorted((act / "test").glob("chunk-*.safetensors"))[0]
    tensors = load_file(str(chunk))
    tensors["lm_log_odds"][3] = float("inf")
    save_file(tensors, str(chunk))
    with pytest.raises(QuirkyError, match=r"holds 1 non-finite LM log-odds"):
        run_transfer(act, tmp_path / "out", _cfg(methods=("lr",), experiments=("A->A,B",)))


def test_safetensors_digest_ignores_header_order(tmp_path: Path) -> None:
    code = (
        "import sys, torch\n"
        "from safetensors.torch import save_file\n"
        "save_file({'a': torch.arange(6.0), 'b': torch.ones(2, 2)}, sys.argv[1],"
        " metadata={k: k * 3 for k in 'abcdefghijklmnop'})\n"
    )
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for p in paths:
        subprocess.run([sys.executable, "-c", code, str(p)], check=True)
    assert len({safetensors_digest(p) for p in paths}) == 1
    # (the raw bytes usually differ: the metadata is written from a hash map)
    assert len({file_digest(p) for p in paths}) >= 1


def test_model_digest_covers_every_byte_and_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quirky.models import loading

    monkeypatch.setenv("QUIRKY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_digest_memo", {})
    weights = tmp_path / "w.gguf"
    data = bytearray(os.urandom(5 << 20))
    weights.write_bytes(bytes(data))
    first = loading.quick_digest(weights)
    stat = weights.stat()
    data[len(data) // 2] ^= 0xFF  # one byte in the middle, same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert loading.quick_digest(weights) != first
    assert (tmp_path / "cache" / loading.DIGEST_CACHE).is_file()
    # a second process (empty memo) reads the cached digest instead of hashing again
    monkeypatch.setattr(loading, "_digest_memo", {})
    monkeypatch.setattr(loading, "file_digest", lambda *_a, **_k: pytest.fail("hashed twice"))
    assert loading.quick_digest(weights) == loading.quick_digest(weights)


def test_duplicates_dropped_counts_what_a_family_removed(tmp_path: Path) -> None:
    from test_datasets_cities import CSV

    from quirky.datasets.build import build_dataset

    rows = CSV.strip().splitlines()
    src = tmp_path / "cities.csv"
    src.write_text("\n".join([*rows, rows[2], rows[5], rows[5]]) + "\n")  # Lyon once more, Sydney twice more
    result = build_dataset("capitals", tmp_path / "cap", source=src, n_train=-1, n_val=4, n_test=4)
    assert result.meta["duplicates_dropped"] == 3
    assert json.loads((tmp_path / "cap" / "dataset.json").read_text())["duplicates_dropped"] == 3
