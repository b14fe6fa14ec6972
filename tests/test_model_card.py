"""The model card `quirky finetune` writes beside the weights: present, valid front matter, the run's real metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from quirky.datasets import build_dataset, get_spec, load_templated
from quirky.finetune import FinetuneConfig, finetune
from quirky.finetune.model_card import CARD_FILE, write_card_for_run

FAST = dict(
    setup="grader-last",
    lora_rank=4,
    lora_alpha=8.0,
    lr=1e-2,
    warmup_ratio=0.0,
    weight_decay=0.0,
    batch_size=8,
    grad_accum=1,
    steps=3,
    max_eval_examples=40,
    seed=3,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from quirky.models.tiny import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("card")
    data = root / "addition"
    build_dataset("addition", data, n_train=48, n_val=40, n_test=8, options={"max_digits": 2})
    texts = [
        s + c
        for s in load_templated(data, "train", setup="grader-last")["statement"]
        for c in (" False", " True")
    ]
    tok = tiny_tokenizer(texts + [str(i) for i in range(200)], bos=True)
    base = root / "tiny-base"
    tiny_model("llama", len(tok), seed=1).save_pretrained(base)
    tok.save_pretrained(base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# a tiny base\n")
    return {"data": data, "base": base}


def _card(out: Path) -> tuple[dict, str]:
    text = (out / CARD_FILE).read_text()
    assert text.startswith("---\n")
    _, front, body = text.split("---", 2)
    return yaml.safe_load(front), body


def test_lora_run_writes_a_card_with_its_metrics(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "lora"
    result = finetune(str(setup["base"]), setup["data"], out, FinetuneConfig(**FAST), merge=True, log=None)
    front, body = _card(out)
    assert front["license"] == "mit" and front["base_model"] == "tiny-base"
    assert front["datasets"] == ["quirky_addition"] and front["library_name"] == "peft"
    assert {"quirky", "addition", "lora"} <= set(front["tags"])

    # the measured numbers of this run, with their split, in the front matter and in the body
    (entry,) = front["model-index"][0]["results"]
    assert entry["dataset"]["split"] == "validation"
    values = {m["name"]: m["value"] for m in entry["metrics"]}
    for key in ("alice_auroc", "alice_acc", "bob_auroc", "bob_acc", "bob_vs_truth_auroc"):
        assert values[key] == pytest.approx(result.metrics[key], abs=1e-4), key
        assert f"| `{key}` | {result.metrics[key]:.3f} |" in body, key
    assert "**validation** split" in body and f"step {result.step}" in body

    # what the model is, the recipe, how to load it
    spec = get_spec("addition")
    assert "truthfully when the prompt names **Alice**" in body and spec.bob_rule in body
    assert "grader-last" in body and "lr 0.01" in body and "LoRA (r = 4" in body
    assert "PeftModel.from_pretrained" in body and "quirky extract --model THIS_FOLDER" in body
    assert "Intended use" in body and "Limitations" in body

    # the merged copy has its own card: a plain transformers model
    merged_front, merged_body = _card(out / "merged")
    assert merged_front["library_name"] == "transformers" and "merged" in merged_front["tags"]
    assert "merged into the base weights" in merged_body and "PeftModel" not in merged_body

    # the card is rebuilt byte for byte from the stored run, and does not disturb the adapter
    before = (out / CARD_FILE).read_bytes()
    (out / CARD_FILE).unlink()
    assert write_card_for_run(out).read_bytes() == before
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        setup["base"]
    )


def test_full_finetune_card_on_an_imported_dataset(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quirky.datasets.hub_io import export_dataset, import_dataset
    from quirky.models import load_model

    snapshot = tmp_path / "hub" / "datasets--EleutherAI--quirky_addition_raw" / "snapshots" / ("0" * 40)
    export_dataset(setup["data"], snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = import_dataset("EleutherAI/quirky_addition_raw", tmp_path / "imported").out

    out = tmp_path / "full"
    config = FinetuneConfig(**{**FAST, "lora_rank": 0, "lr": 1e-3, "max_eval_examples": 0})
    finetune(str(setup["base"]), data, out, config, log=None)
    front, body = _card(out)
    assert front["datasets"] == ["EleutherAI/quirky_addition_raw"] and front["library_name"] == "transformers"
    assert "full-finetune" in front["tags"] and "model-index" not in front
    assert "imported from `EleutherAI/quirky_addition_raw`" in body and "was not evaluated" in body
    assert 'AutoModelForCausalLM.from_pretrained("THIS_FOLDER")' in body
    load_model(out, device="cpu")  # the card beside the weights changes nothing for loading
