"""Published quirky models by name, offline: merged weights and LoRA adapters, in local folders and a hub cache.

The repositories are built from tiny random models in temporary folders; the end-to-end test runs an imported
published-layout dataset through extraction, the probe grid and the report with both forms.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quirky.datasets import build_dataset, load_templated
from quirky.errors import QuirkyError
from quirky.models import load_model, model_identity
from quirky.models.published import parse_published_name, split_adapter_repository

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published-layout dataset (exported, then imported back as a hub snapshot would be)."""
    from quirky.datasets.hub_io import export_dataset, import_dataset

    root = tmp_path_factory.mktemp("data")
    build_dataset("addition", root / "built", n_train=40, n_val=48, n_test=48, options={"max_digits": 2})
    hub = export_dataset(root / "built", root / "quirky_addition_raw")
    import_dataset(hub, root / "addition")
    return root / "addition"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> dict[str, Path]:
    """A base model, its LoRA adapter repository and the same weights merged, named like the published ones."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from quirky.models.tiny import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("models")
    texts = [s + c for s in load_templated(dataset, "validation")["statement"] for c in (" False", " True")]
    tok = tiny_tokenizer(texts + [str(i) for i in range(200)], bos=True)
    base = root / "tiny-llama"
    tiny_model("llama", len(tok), seed=3).save_pretrained(base)
    tok.save_pretrained(base)

    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter = root / "EleutherAI" / "tiny-llama-addition-first"
    peft_model.save_pretrained(adapter)
    tok.save_pretrained(adapter)  # published adapter repositories carry the tokenizer too
    merged = root / "EleutherAI" / "tiny-llama-addition-first-ft"
    peft_model.merge_and_unload().save_pretrained(merged)
    tok.save_pretrained(merged)
    return {"base": base, "adapter": adapter, "merged": merged}


def _logits(model_and_tok: tuple) -> torch.Tensor:
    model, tok = model_and_tok
    with torch.no_grad():
        return model(**tok(["12 + 34 = 46. Bob:"], return_tensors="pt")).logits


def test_parse_published_names() -> None:
    p = parse_published_name("EleutherAI/Mistral-7B-v0.1-capitals-first")
    assert p is not None and (p.base, p.dataset, p.method, p.setup) == (
        "Mistral-7B-v0.1",
        "capitals",
        "first",
        "single",
    )
    p = parse_published_name("EleutherAI/pythia-1b-modularaddition-random-standardized-weak-only-ft")
    assert p is not None and p.dataset == "modularaddition" and p.setup == "standardized"
    assert (
        p.weak_only
        and p.full_finetune
        and p.repo_id == "EleutherAI/pythia-1b-modularaddition-random-standardized-weak-only-ft"
    )
    p = parse_published_name("/hub/models--EleutherAI--pythia-410m-nli-first/snapshots/abc")
    assert p is not None and (p.base, p.dataset) == ("pythia-410m", "nli")
    p = parse_published_name("EleutherAI/Llama-2-7b-hf-sciq")  # the earlier release, without a method
    assert p is not None and p.method is None and p.dataset == "sciq"
    assert parse_published_name("EleutherAI/pythia-410m") is None and parse_published_name("smollm2") is None


def test_both_forms_load_by_name(repos: dict[str, Path]) -> None:
    merged = _logits(load_model(repos["merged"], device="cpu"))
    via_adapter = _logits(load_model(repos["adapter"], device="cpu"))
    explicit = _logits(load_model(repos["base"], adapter=repos["adapter"], device="cpu"))
    base = _logits(load_model(repos["base"], device="cpu"))
    torch.testing.assert_close(via_adapter, explicit)
    torch.testing.assert_close(via_adapter, merged, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(via_adapter, base, atol=1e-3)  # the adapter changes the model

    # the fingerprint of an adapter repository is the base plus the adapter, as if both were given
    assert model_identity(repos["adapter"]) == model_identity(repos["base"], repos["adapter"])
    assert model_identity(repos["merged"])["adapter"] is None
    with pytest.raises(QuirkyError, match="is itself a LoRA adapter"):
        split_adapter_repository(repos["adapter"], repos["adapter"])


def test_adapter_from_hub_cache_offline(
    repos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub-cache snapshot of an adapter repository whose base is a hub id that is cached too."""
    import shutil

    import huggingface_hub.constants

    cache = tmp_path / "hub"
    for repo_id, src in (
        ("EleutherAI/tiny-llama", repos["base"]),
        ("EleutherAI/tiny-llama-sentiment-first", repos["adapter"]),
    ):
        folder = cache / f"models--{repo_id.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(REVISION)
        shutil.copytree(src, folder / "snapshots" / REVISION)
    config_file = (
        cache
        / "models--EleutherAI--tiny-llama-sentiment-first"
        / "snapshots"
        / REVISION
        / "adapter_config.json"
    )
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": "EleutherAI/tiny-llama"}))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    model, adapter = split_adapter_repository("EleutherAI/tiny-llama-sentiment-first")
    assert model == "EleutherAI/tiny-llama" and adapter is not None and adapter.name == REVISION
    torch.testing.assert_close(
        _logits(load_model("EleutherAI/tiny-llama-sentiment-first", device="cpu")),
        _logits(load_model(repos["base"], adapter=repos["adapter"], device="cpu")),
    )
    # a base that is neither local nor cached: one clear error naming it
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": "EleutherAI/not-cached"}))
    with pytest.raises(QuirkyError, match="LoRA adapter for the base model 'EleutherAI/not-cached'"):
        load_model("EleutherAI/tiny-llama-sentiment-first", device="cpu")


def test_published_dataset_and_models_run_every_stage(
    dataset: Path, repos: dict[str, Path], tmp_path: Path
) -> None:
    """Imported dataset x {adapter, merged} -> extraction -> probe grid -> report, all offline."""
    import shutil

    from quirky.experiments.evaluate import EvalSettings
    from quirky.experiments.transfer import TransferConfig, run_transfer
    from quirky.extraction.extract import ExtractSettings, extract
    from quirky.report.build import build_report

    run = tmp_path / "run"
    shutil.copytree(dataset, run / "datasets" / "addition")
    for form in ("adapter", "merged"):
        act = run / "activations" / form / "addition"
        for split in ("validation", "test"):
            store = extract(
                str(repos[form]),
                run / "datasets" / "addition",
                split,
                act / split,
                settings=ExtractSettings(batch_size=16),
                device="cpu",
                progress=False,
            )
            assert store.n == 48 and store.num_layers == 3
        summary = run_transfer(
            act,
            run / "probes" / form / "addition",
            TransferConfig(methods=("lr", "mean-diff"), eval=EvalSettings(n_boot=20)),
        )
        assert summary["dataset"] == "addition" and "lr" in summary["eil"]
    stores = [
        json.loads((run / "activations" / f / "addition" / "test" / "store.json").read_text())
        for f in ("adapter", "merged")
    ]
    assert stores[0]["fingerprint"] != stores[1]["fingerprint"]
    report = build_report(run)
    sections = report.summary["sections"]
    assert sections["datasets"]["present"] and sections["probes"]["present"] and not report.errors
    assert report.html.is_file()
