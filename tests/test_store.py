"""The activation store (Contract 2): exact round trips, lazy layer selection, masks, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from quirky.errors import QuirkyError
from quirky.extraction import SUBSETS, open_store, write_store
from quirky.extraction.store import store_fingerprint


def _meta(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "character": ["Alice" if i % 2 == 0 else "Bob" for i in range(n)],
            "label": rng.integers(0, 2, n),
            "alice_label": rng.integers(0, 2, n),
            "bob_label": rng.integers(0, 2, n),
            "difficulty_quantile": (np.arange(n) + 0.5) / n,
            "template": np.zeros(n, dtype=int),
        }
    )


def _tensors(num_layers: int = 3, n: int = 10, d: int = 4, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(num_layers, n, d, generator=g).to(dtype)
    p = torch.randn(num_layers, n, 2, d, generator=g).to(dtype)
    lo = torch.randn(n, generator=g)
    return h, p, lo


def test_round_trip_float32_exact(tmp_path):
    h, p, lo = _tensors()
    config = {"model": "tiny", "split": "validation", "runtime": {"batch_size": 4}}
    store = write_store(
        tmp_path / "s", hiddens=h, pairs=p, lm_log_odds=lo, meta=_meta(10), config=config, chunk_size=3
    )
    store = open_store(tmp_path / "s")
    assert (store.n, store.num_layers, store.hidden_size) == (10, 3, 4)
    assert store.storage_dtype == "float32"
    assert torch.equal(store.hiddens(), h)
    assert torch.equal(store.pairs(), p)
    assert torch.equal(store.lm_log_odds(), lo)
    assert store.config == config
    assert store.fingerprint == store_fingerprint(config)
    # The runtime settings do not change what was extracted, so they are not part of the fingerprint.
    assert store.fingerprint == store_fingerprint({"model": "tiny", "split": "validation"})
    assert list(store.meta["id"]) == [f"q{i}" for i in range(10)]
    assert len(json.loads((tmp_path / "s" / "store.json").read_text())["chunks"]) == 4


def test_layer_selection_order_and_negative_index(tmp_path):
    h, p, lo = _tensors(num_layers=5)
    store = write_store(tmp_path / "s", hiddens=h, pairs=p, lm_log_odds=lo, meta=_meta(10), config={})
    assert torch.equal(store.hiddens(layers=[4, 1]), h[[4, 1]])
    assert torch.equal(store.hiddens(layers=-1), h[[4]])
    assert torch.equal(store.pairs(layers=[2]), p[[2]])
    assert store.hiddens(dtype=torch.float64).dtype == torch.float64
    with pytest.raises(QuirkyError, match="out of range"):
        store.hiddens(layers=[5])


def test_float16_storage(tmp_path):
    h, p, lo = _tensors()
    store = write_store(
        tmp_path / "s", hiddens=h, pairs=p, lm_log_odds=lo, meta=_meta(10), config={}, storage_dtype="float16"
    )
    assert store.storage_dtype == "float16"
    assert torch.equal(store.hiddens(), h.half().float())
    assert torch.equal(store.lm_log_odds(), lo)  # log-odds are always kept in float32
    with pytest.raises(QuirkyError, match="too large for float16"):
        write_store(
            tmp_path / "big",
            hiddens=h * 1e6,
            pairs=p,
            lm_log_odds=lo,
            meta=_meta(10),
            config={},
            storage_dtype="float16",
        )
    assert not (tmp_path / "big").exists()


def test_masks(tmp_path):
    h, p, lo = _tensors(n=8)
    meta = _meta(8)
    store = write_store(tmp_path / "s", hiddens=h, pairs=p, lm_log_odds=lo, meta=meta, config={})
    q = meta["difficulty_quantile"].to_numpy()  # 0.0625, 0.1875, ..., 0.9375
    alice = meta["character"].to_numpy() == "Alice"
    expected = {
        "all": np.ones(8, bool),
        "A": alice,
        "B": ~alice,
        "AE": alice & (q <= 0.25),
        "AH": alice & (q >= 0.75),
        "BE": ~alice & (q <= 0.25),
        "BH": ~alice & (q >= 0.75),
    }
    for subset in SUBSETS:
        np.testing.assert_array_equal(store.mask(subset), expected[subset])
    assert store.mask("AE").tolist() == [True, False, False, False, False, False, False, False]
    assert store.mask("BH").tolist() == [False] * 7 + [True]
    assert store.mask("AE", easy=0.5).sum() == 2
    with pytest.raises(QuirkyError, match="unknown subset"):
        store.mask("C")


def test_errors(tmp_path):
    h, p, lo = _tensors()
    with pytest.raises(QuirkyError, match="does not exist"):
        open_store(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuirkyError, match="not a finished"):
        open_store(tmp_path / "empty")
    with pytest.raises(QuirkyError, match="NaN"):
        bad = h.clone()
        bad[0, 0, 0] = float("nan")
        write_store(tmp_path / "nan", hiddens=bad, pairs=p, lm_log_odds=lo, meta=_meta(10), config={})
    assert not (tmp_path / "nan").exists()
    with pytest.raises(QuirkyError, match="lacks the column"):
        write_store(
            tmp_path / "m",
            hiddens=h,
            pairs=p,
            lm_log_odds=lo,
            meta=_meta(10).drop(columns="template"),
            config={},
        )
    with pytest.raises(QuirkyError, match="pairs must be"):
        write_store(tmp_path / "m", hiddens=h, pairs=p[:, :5], lm_log_odds=lo, meta=_meta(10), config={})
    store = write_store(tmp_path / "s", hiddens=h, pairs=p, lm_log_odds=lo, meta=_meta(10), config={})
    with pytest.raises(QuirkyError, match="no multi-token"):
        store.lm_log_odds(full=True)
    (tmp_path / "s" / "chunk-00000.safetensors").unlink()
    with pytest.raises(QuirkyError, match="damaged"):
        open_store(tmp_path / "s")


def test_deterministic_bytes(tmp_path):
    h, p, lo = _tensors()
    for name in ("a", "b"):
        write_store(tmp_path / name, hiddens=h, pairs=p, lm_log_odds=lo, meta=_meta(10), config={"x": 1})
    files = sorted(f.name for f in (tmp_path / "a").iterdir())
    assert files == sorted(f.name for f in (tmp_path / "b").iterdir())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
