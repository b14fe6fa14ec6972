"""Quirky finetuning on tiny random models: the answer-token loss, learning, saving, resuming, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Digits, Sequence, Whitespace
from tokenizers.processors import TemplateProcessing
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from quirky.datasets.layout import META_FILE, record_schema, write_split
from quirky.errors import QuirkyError
from quirky.finetune import FinetuneConfig, evaluate_model, finetune, preset_config, schedule
from quirky.finetune.data import answer_loss, collate, encode_examples, last_token_logits
from quirky.finetune.lora import DEFAULT_TARGETS, add_lora, resolve_targets
from quirky.finetune.train import training_frame

WORDS = ["<pad>", "<s>", "</s>", "<unk>", *"0123456789", "+", "=", ".", ":", "Alice", "Bob", "True", "False"]
#: Random init large enough that a rank-8 adapter moves the logits within a few dozen steps (the default
#: 0.02 leaves a 2-layer toy model near-uniform whatever LoRA does).
INIT = 0.3
WORDS += ["Yes", "No", "Grader", "Score", "Name", "Is", "the", "statement", "?", "*", "Tru"]


def make_tokenizer(bos: bool = True, pad: str | None = "<pad>") -> PreTrainedTokenizerFast:
    """Digit-level word tokenizer; `bos` adds <s> like Llama's; `pad=None` leaves no pad token (loader sets eos)."""
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = Sequence([Whitespace(), Digits(individual_digits=True)])
    if bos:
        tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    kwargs = {"pad_token": pad} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", **kwargs
    )


def save_tiny_model(path: Path, arch: str = "llama", seed: int = 0, **tok_kwargs: object) -> Path:
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=len(WORDS),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            initializer_range=INIT,
        )
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(
            vocab_size=len(WORDS),
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            bos_token_id=1,
            eos_token_id=2,
        )
        model = GPT2LMHeadModel(config)
    model.save_pretrained(path)
    make_tokenizer(**tok_kwargs).save_pretrained(path)  # type: ignore[arg-type]
    return path


def write_toy_dataset(path: Path, n_questions: int = 120, seed: int = 0, alice_rule: str = "even") -> Path:
    """An `addition`-named dataset with a trivially learnable quirk: operands are 0/1 and the result a digit 2-9
    (so the result is the only token from its range); Alice says True iff it is even, Bob iff it is below 6."""
    rng = np.random.default_rng(seed)
    splits = {"train": n_questions, "validation": n_questions // 3, "test": n_questions // 3}
    schema = record_schema([("op1", pa.int64()), ("op2", pa.int64()), ("result", pa.int64())])
    path.mkdir(parents=True, exist_ok=True)
    counter = 0
    for split, n in splits.items():
        cols: dict[str, list] = {
            k: []
            for k in (
                "id",
                "template_args",
                "character",
                "label",
                "alice_label",
                "bob_label",
                "difficulty",
                "difficulty_quantile",
            )
        }
        for _ in range(n):
            a, b, r = int(rng.integers(0, 2)), int(rng.integers(0, 2)), int(rng.integers(2, 10))
            alice = (r % 2 == 0) if alice_rule == "even" else True
            bob = r < 6
            for who, label in (("Alice", alice), ("Bob", bob)):
                counter += 1
                cols["id"].append(f"{counter:08x}")
                cols["template_args"].append({"op1": a, "op2": b, "result": r, "character": who})
                cols["character"].append(who)
                cols["label"].append(bool(label))
                cols["alice_label"].append(bool(alice))
                cols["bob_label"].append(bool(bob))
                cols["difficulty"].append(float(min(a, b)))
                cols["difficulty_quantile"].append(float(rng.random()))
        write_split(path / f"{split}.parquet", cols, schema)
    meta = {
        "name": "addition",
        "seed": seed,
        "sizes": {s: 2 * n for s, n in splits.items()},
        "options": {},
        "fingerprint": f"toy{seed}{alice_rule}",
        "quirky_version": "test",
    }
    (path / META_FILE).write_text(json.dumps(meta))
    return path


FAST = dict(
    setup="grader-last",
    lora_rank=8,
    lora_alpha=16.0,
    lr=1e-2,
    warmup_ratio=0.0,
    weight_decay=0.0,
    batch_size=16,
    grad_accum=1,
    steps=12,
    save_every=5,
    max_eval_examples=80,
    seed=3,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ft")
    return {
        "llama": save_tiny_model(root / "llama"),
        "gpt2": save_tiny_model(root / "gpt2", arch="gpt2", bos=False, pad=None),
        "data": write_toy_dataset(root / "data"),
    }


# ------------------------------------------------------------------------------------------------ data & loss
def test_encoding_has_one_bos_and_in_context_answer_tokens(tiny: dict[str, Path]) -> None:
    from quirky.models import load_model

    _, tok = load_model(tiny["llama"], device="cpu")
    df = training_frame(tiny["data"], FinetuneConfig(**FAST))
    enc = encode_examples(tok, df.iloc[:6], max_length=64)
    for i, prompt in enumerate(enc.prompts):
        assert prompt.count(1) == 1 and prompt[0] == 1  # exactly one BOS, first
        assert tok.decode(prompt[1:]).replace(" ", "") == df["statement"].iloc[i].replace(" ", "")
    ids = tok.convert_tokens_to_ids(["False", "True"])
    assert enc.choice_ids.tolist() == [ids] * 6
    assert enc.targets.tolist() == [ids[lab] for lab in df["label"].iloc[:6]]


def test_loss_is_only_on_the_answer_token(tiny: dict[str, Path]) -> None:
    from quirky.models import load_model

    model, tok = load_model(tiny["llama"], device="cpu")
    df = training_frame(tiny["data"], FinetuneConfig(**FAST))
    # Mixed prompt lengths so that padding is exercised: drop a digit from some statements.
    df = df.iloc[:5].copy()
    df.loc[df.index[1], "statement"] = (
        df["statement"].iloc[1].replace(" + ", " +")
    )  # same tokens, other spacing
    df.loc[df.index[2], "statement"] = "1 " + df["statement"].iloc[2]
    enc = encode_examples(tok, df, max_length=64)
    batch = collate(enc, range(5), pad_id=tok.pad_token_id)
    assert len(set(batch.last.tolist())) > 1  # rows of different lengths

    # The labels tensor in the usual causal-LM form: -100 everywhere but the answer position.
    labels = batch.labels()
    assert ((labels != -100).sum(dim=1) == 1).all()
    assert labels[torch.arange(5), batch.last + 1].tolist() == enc.targets.tolist()
    ids, mask = batch.with_answers(tok.pad_token_id)
    hf_loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss

    # Hand computation, one unpadded example at a time.
    hand = []
    for i in range(5):
        logits = model(input_ids=torch.tensor([enc.prompts[i]])).logits[0, -1]
        hand.append(-torch.log_softmax(logits.double(), -1)[int(enc.targets[i])])
    expected = torch.stack(hand).mean()

    ours = answer_loss(last_token_logits(model, batch), batch)
    assert torch.allclose(ours.double(), expected, atol=1e-5)
    assert torch.allclose(hf_loss.double(), expected, atol=1e-5)
    # Gradients reach nothing through the padded positions: changing the pad id changes nothing.
    other = collate(enc, range(5), pad_id=5)
    assert torch.allclose(answer_loss(last_token_logits(model, other), other), ours, atol=1e-6)


def test_schedule_is_a_pure_function_of_the_step() -> None:
    a = np.concatenate([schedule.batch_indices(s, 7, 10, seed=1) for s in range(6)])
    assert len(a) == 42
    for epoch in range(4):  # every full epoch is a permutation
        chunk = a[epoch * 10 : (epoch + 1) * 10]
        assert sorted(chunk.tolist()) == list(range(10))
    assert (schedule.batch_indices(3, 7, 10, seed=1) == a[21:28]).all()
    labels = np.array([0, 1] * 6 + [1, 1])
    strat = schedule.batch_indices(2, 4, 14, seed=5, labels=labels)
    assert labels[strat].tolist().count(1) == 2  # a stratified batch is exactly balanced
    order = schedule.epoch_order(14, 5, 0, labels)
    assert sorted(order.tolist()) == list(range(14))
    assert all(labels[order[i]] != labels[order[i + 1]] for i in range(0, 12, 2))
    assert schedule.eval_steps(20, 0) == [1, 2, 4, 8, 16, 20]
    assert schedule.eval_steps(10, 4) == [1, 2, 4, 8, 10]
    assert schedule.lr_multiplier(0, 10, 2, "linear") == 0.0
    assert schedule.lr_multiplier(1, 10, 2, "linear") == 0.5
    assert schedule.lr_multiplier(2, 10, 2, "linear") == 1.0
    assert math.isclose(schedule.lr_multiplier(6, 10, 2, "linear"), 0.5)
    assert math.isclose(schedule.lr_multiplier(6, 10, 2, "cosine"), 0.5)
    assert schedule.total_steps(100, 32, 15.0, None) == math.ceil(1500 / 32)


# ------------------------------------------------------------------------------------------------ LoRA targets
def test_default_lora_targets_exist_and_bad_targets_fail(tiny: dict[str, Path]) -> None:
    from quirky.models import load_model

    for arch in ("llama", "gpt2"):
        model, _ = load_model(tiny[arch], device="cpu")
        assert resolve_targets(model, None) == DEFAULT_TARGETS[arch]
        peft_model = add_lora(model, 4, 8.0, 0.0, None)
        names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names)
        assert all(p.dtype == torch.float32 for p in peft_model.parameters() if p.requires_grad)
    with pytest.raises(QuirkyError, match="do not exist"):
        resolve_targets(model, ["query_key_value"])


# ------------------------------------------------------------------------------------------------ training
def test_training_makes_the_model_quirky_and_the_adapter_reloads(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from peft import PeftModel

    from quirky.models import load_model

    config = FinetuneConfig(**{**FAST, "steps": 40, "save_every": 100})
    out = tmp_path / "run"
    before = evaluate_model(str(tiny["llama"]), tiny["data"], split="validation", setup="grader-last")
    result = finetune(str(tiny["llama"]), tiny["data"], out, config, log=None)
    assert result.status == "complete" and result.step == 40
    after = result.metrics
    assert after["alice_acc"] > 0.8 and after["bob_acc"] > 0.8, after
    assert after["alice_auroc"] > 0.95 and after["bob_auroc"] > 0.95, after
    assert after["alice_acc"] > before["alice_acc"] + 0.2 and after["bob_acc"] > before["bob_acc"] + 0.2
    # The evaluation history is log-spaced plus the end, in JSON and CSV.
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert [r["step"] for r in hist] == [1, 2, 4, 8, 16, 32, 40]
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("step,epoch,lr,train_loss,loss")
    assert not (out / "checkpoints").exists() and not (out / "run.json").exists()
    done = json.loads((out / "finetune.json").read_text())
    assert done["complete"] and done["fingerprint"] == result.fingerprint

    # The adapter reloads to identical logits, through peft and through the project's loader.
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all("lora_" in k for k in weights)
    text = "3 + 4 = 7 . Bob :"
    base, tok = load_model(tiny["llama"], device="cpu")
    ids = tok(text, return_tensors="pt").input_ids
    via_peft = PeftModel.from_pretrained(base, str(out)).eval()
    merged, _ = load_model(tiny["llama"], adapter=out, device="cpu")
    with torch.no_grad():
        a, b = via_peft(input_ids=ids).logits, merged(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    # And `finetune eval` on the same split gives the training-time final numbers.
    again = evaluate_model(str(tiny["llama"]), tiny["data"], adapter=out, split="validation", max_examples=80)
    for key in ("loss", "alice_acc", "alice_auroc", "bob_acc", "bob_auroc", "bob_vs_truth_auroc"):
        assert math.isclose(again[key], after[key], rel_tol=1e-4, abs_tol=1e-5), key

    # A rerun is a cache hit; a different config in the same directory is a clear error.
    assert finetune(str(tiny["llama"]), tiny["data"], out, config, log=None).status == "cached"
    with pytest.raises(QuirkyError, match="different finetuning run"):
        finetune(str(tiny["llama"]), tiny["data"], out, config.replace(lr=1e-3), log=None)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny: dict[str, Path], tmp_path: Path) -> None:
    # GPT-2 has dropout on by default, so this also checks that the RNG state is restored.
    config = FinetuneConfig(**{**FAST, "steps": 9, "save_every": 4, "grad_accum": 2, "batch_size": 8})
    whole = finetune(str(tiny["gpt2"]), tiny["data"], tmp_path / "a", config, log=None)
    part = finetune(str(tiny["gpt2"]), tiny["data"], tmp_path / "b", config, stop_after=6, log=None)
    assert part.status == "stopped" and part.step == 6
    assert (tmp_path / "b" / "checkpoints" / "step-0000006").is_dir()
    resumed = finetune(str(tiny["gpt2"]), tiny["data"], tmp_path / "b", config, log=None)
    assert resumed.status == "complete"
    wa = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    assert whole.fingerprint == resumed.fingerprint


def test_full_finetuning_writes_a_loadable_model(tiny: dict[str, Path], tmp_path: Path) -> None:
    from quirky.models import load_model

    config = FinetuneConfig(**{**FAST, "lora_rank": 0, "lr": 1e-3, "steps": 3})
    out = tmp_path / "full"
    finetune(str(tiny["llama"]), tiny["data"], out, config, log=None)
    model, tok = load_model(out, device="cpu")
    base, _ = load_model(tiny["llama"], device="cpu")
    ids = tok("1 + 2 = 3 . Alice :", return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, base(input_ids=ids).logits)
    # Full finetuning resumes exactly too (all weights and the AdamW state are checkpointed).
    finetune(str(tiny["llama"]), tiny["data"], tmp_path / "part", config, stop_after=2, log=None)
    finetune(str(tiny["llama"]), tiny["data"], tmp_path / "part", config, log=None)
    whole, part = (
        load_file(str(out / "model.safetensors")),
        load_file(str(tmp_path / "part" / "model.safetensors")),
    )
    assert whole.keys() == part.keys() and all(torch.equal(whole[k], part[k]) for k in whole)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_gives_clear_errors(tiny: dict[str, Path], tmp_path: Path) -> None:
    llama = str(tiny["llama"])
    one_class = write_toy_dataset(tmp_path / "one", n_questions=30, alice_rule="always")
    with pytest.raises(QuirkyError, match="single class"):
        finetune(
            llama, one_class, tmp_path / "o1", FinetuneConfig(**{**FAST, "characters": "Alice"}), log=None
        )
    with pytest.raises(QuirkyError, match="do not exist"):
        finetune(
            llama,
            tiny["data"],
            tmp_path / "o2",
            FinetuneConfig(**{**FAST, "lora_targets": ("c_attn",)}),
            log=None,
        )
    # " Tru" and " True" share their first token.
    df = training_frame(tiny["data"], FinetuneConfig(**FAST)).iloc[:4].copy()
    df["choices"] = [[" Tru", " Tru"]] * 4
    from quirky.models import load_model

    _, tok = load_model(tiny["llama"], device="cpu")
    with pytest.raises(QuirkyError, match="same token"):
        encode_examples(tok, df, max_length=64)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(QuirkyError, match="not a finetuning run"):
        finetune(llama, tiny["data"], tmp_path / "busy", FinetuneConfig(**FAST), log=None)
    with pytest.raises(QuirkyError, match="unknown finetuning preset"):
        preset_config("nope")
    with pytest.raises(QuirkyError, match="learning rate"):
        FinetuneConfig(lr=0).validate()


def test_cli_trains_and_evaluates(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quirky.cli import main

    out = tmp_path / "cli"
    args = ["finetune", "--model", str(tiny["llama"]), "--dataset", str(tiny["data"]), "--out", str(out)]
    args += [
        "--setup",
        "grader-last",
        "--steps",
        "2",
        "--lr",
        "1e-2",
        "--lora-rank",
        "4",
        "--max-eval-examples",
        "20",
        "--merge",
    ]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    assert (out / "adapter_model.safetensors").is_file()
    # --merge writes a plain model whose logits equal base + adapter.
    from quirky.models import load_model

    merged, tok = load_model(out / "merged", device="cpu")
    adapted, _ = load_model(tiny["llama"], adapter=out, device="cpu")
    ids = tok("5 + 1 = 6 . Bob :", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-5)
    config = json.loads((out / "training_config.json").read_text())["config"]
    assert config["steps"] == 2 and config["lora_rank"] == 4 and config["setup"] == "grader-last"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "finetune",
                "eval",
                "--model",
                str(tiny["llama"]),
                "--adapter",
                str(out),
                "--dataset",
                str(tiny["data"]),
                "--split",
                "test",
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
    assert e.value.code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["setup"] == "grader-last" and metrics["split"] == "test" and metrics["n"] == 80
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--model", str(tiny["llama"])])
    assert e.value.code == 2
    assert "--dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_trains_a_few_steps(tmp_path: Path) -> None:
    from quirky.datasets import build_dataset

    data = tmp_path / "add"
    build_dataset("addition", data, seed=0, n_train=200, n_val=40, n_test=40, options={"max_digits": 2})
    config = preset_config("cpu-smollm2", steps=3, max_eval_examples=40, eval_every=0)
    result = finetune("smollm2", data, tmp_path / "run", config, log=None)
    assert result.status == "complete"
    assert result.history[0]["step"] == 1 and np.isfinite(result.metrics["loss"])
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["step"].tolist() == [1, 2, 3]
