"""The probe stage keeps activations in the store's dtype (float16 for extracted stores) and converts only what a
probe uses; the results are those of reading everything as float32 up front.

The float16 -> float32 conversion is exact, so a float16 store and a float32 store holding the same (float16
representable) values must give identical result tables and scores, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from quirky.experiments.evaluate import EvalSettings
from quirky.experiments.transfer import TransferConfig, _Splits, run_transfer
from quirky.extraction.store import open_store, write_store

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _split(path, n: int, seed: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, n)
    bob = np.where(rng.random(n) < 0.5, alice, 1 - alice)
    character = np.where(np.arange(n) % 2 == 0, "Alice", "Bob")
    meta = pd.DataFrame(
        {
            "id": [f"{seed}-{i}" for i in range(n)],
            "character": character,
            "label": np.where(character == "Alice", alice, bob),
            "alice_label": alice,
            "bob_label": bob,
            "difficulty_quantile": rng.random(n),
            "template": 0,
        }
    )
    layers, d = 3, 6
    truth = torch.randn(d, generator=g)
    a = torch.tensor(2.0 * alice - 1, dtype=torch.float32)[None, :, None]
    hid = (
        torch.randn(layers, n, d, generator=g) + torch.linspace(0.5, 2, layers)[:, None, None] * a * truth + 3
    )
    pairs = hid[:, :, None, :] + 0.5 * torch.randn(layers, n, 2, d, generator=g)
    # float16-representable values, so that both stores hold exactly the same numbers
    hid, pairs = hid.half().float(), pairs.half().float()
    lm = torch.tensor(2.0 * alice - 1).float() + torch.randn(n, generator=g)
    config = {"source": {"model": "toy", "dataset": "synth"}}
    write_store(path, hiddens=hid, pairs=pairs, lm_log_odds=lm, meta=meta, config=config, storage_dtype=dtype)


def test_float16_store_gives_the_float32_results(tmp_path) -> None:
    roots = {}
    for name, dtype in (("f16", torch.float16), ("f32", torch.float32)):
        root = tmp_path / name
        _split(root / "validation", 160, 0, dtype)
        _split(root / "test", 120, 1, dtype)
        roots[name] = root
    splits = _Splits(
        open_store(roots["f16"] / "validation"), open_store(roots["f16"] / "test"), torch.device("cpu")
    )
    assert splits.features("train", False).dtype == torch.float16  # kept as stored, not widened
    assert splits.features("test", True).dtype == torch.float16
    cfg = TransferConfig(
        methods=("lr", "mean-diff-on-pair", "lda", "random"),
        eval=EvalSettings(n_boot=40),
        probe_options={"random": {"n_directions": 100}},
    )
    for name, root in roots.items():
        run_transfer(root, tmp_path / f"out-{name}", cfg)
    a, b = tmp_path / "out-f16", tmp_path / "out-f32"
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "results.parquet"), pd.read_parquet(b / "results.parquet")
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "random.parquet"), pd.read_parquet(b / "random.parquet")
    )
    files = sorted(p.relative_to(a) for p in (a / "scores").rglob("*.safetensors"))
    assert len(files) == 10
    for rel in files:
        x, y = load_file(a / rel), load_file(b / rel)
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and torch.equal(x[k].view(torch.uint8), y[k].view(torch.uint8)), (
                rel,
                k,
            )
