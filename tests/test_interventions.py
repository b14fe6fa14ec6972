"""Interventions: the reflection hook touches only the last position of the chosen layer, and equals the formula."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from quirky.errors import QuirkyError
from quirky.interventions.reflect import (
    decoder_layers,
    final_norm,
    householder,
    num_layers,
    reflect_last_position,
)

transformers.logging.set_verbosity_error()

D, LAYERS, VOCAB = 16, 3, 64


def _build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=D,
            intermediate_size=32,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
        model = LlamaForCausalLM(cfg)
    elif kind == "mistral":
        cfg = MistralConfig(
            vocab_size=VOCAB,
            hidden_size=D,
            intermediate_size=32,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            num_key_value_heads=1,
            sliding_window=4,
        )
        model = MistralForCausalLM(cfg)
    elif kind == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=LAYERS, n_head=2, bos_token_id=0, eos_token_id=0)
        )
    elif kind == "neox":
        cfg = GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=D,
            intermediate_size=32,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = GPTNeoXForCausalLM(cfg)
    elif kind == "llama-lora":
        from peft import LoraConfig, get_peft_model

        base = _build("llama")
        model = get_peft_model(
            base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        )
    else:
        raise ValueError(kind)
    return model.eval()


KINDS = ["llama", "mistral", "gpt2", "neox", "llama-lora"]


@pytest.fixture(scope="module", params=KINDS)
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return _build(request.param)


def _run(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    return out.logits, out.hidden_states


def _reference_reflection(h: torch.Tensor, w: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The formula in float64, written independently of the code under test."""
    h64, w64, mu64 = h.double(), w.double(), mu.double()
    u = w64 / w64.norm()
    return h64 - 2 * ((h64 - mu64) @ u)[..., None] * u


def test_finds_layers_and_final_norm(model: torch.nn.Module) -> None:
    assert num_layers(model) == LAYERS
    assert len(decoder_layers(model)) == LAYERS
    norm = final_norm(model)
    assert "norm" in type(norm).__name__.lower()


@pytest.mark.parametrize("layer", [0, 1, LAYERS - 1])
def test_only_last_position_changes(model: torch.nn.Module, layer: int) -> None:
    g = torch.Generator().manual_seed(layer)
    ids = torch.randint(1, VOCAB, (3, 7), generator=g)
    w = torch.randn(D, generator=g)
    mu = torch.randn(D, generator=g)
    clean_logits, clean_hs = _run(model, ids)
    with reflect_last_position(model, layer, w, mu):
        logits, hs = _run(model, ids)
    # Every position before the last is identical at every layer and in the output (bit for bit).
    for lay in range(LAYERS + 1):
        assert torch.equal(hs[lay][:, :-1], clean_hs[lay][:, :-1])
    assert torch.equal(logits[:, :-1], clean_logits[:, :-1])
    # Layers before the hooked one are untouched entirely.
    for lay in range(layer + 1):
        assert torch.equal(hs[lay], clean_hs[lay])
    # The hooked layer's last position is the reflected clean state (store index layer = hidden_states[layer+1]).
    expected = _reference_reflection(clean_hs[layer + 1][:, -1], w, mu)
    torch.testing.assert_close(hs[layer + 1][:, -1].double(), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits[:, -1], clean_logits[:, -1])


def test_reflecting_twice_is_identity(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (2, 5), generator=g)
    w, mu = torch.randn(D, generator=g), torch.randn(D, generator=g)
    clean_logits, _ = _run(model, ids)
    with reflect_last_position(model, 1, w, mu), reflect_last_position(model, 1, w, mu):
        logits, _ = _run(model, ids)
    torch.testing.assert_close(logits, clean_logits, atol=1e-5, rtol=1e-5)
    # and the hooks are removed afterwards
    after, _ = _run(model, ids)
    assert torch.equal(after, clean_logits)


def test_householder_properties() -> None:
    g = torch.Generator().manual_seed(0)
    h, w, mu = torch.randn(10, 8, generator=g), torch.randn(8, generator=g), torch.randn(8, generator=g)
    r = householder(h, w, mu)
    u = w / w.norm()
    torch.testing.assert_close(householder(r, w, mu), h, atol=1e-5, rtol=1e-5)
    # the component along u flips sign around mu; the orthogonal part is unchanged
    torch.testing.assert_close((r - mu) @ u, -((h - mu) @ u), atol=1e-5, rtol=1e-5)
    perp = lambda x: (x - mu) - ((x - mu) @ u)[:, None] * u  # noqa: E731
    torch.testing.assert_close(perp(r), perp(h), atol=1e-5, rtol=1e-5)
    # scaling the direction does not matter
    torch.testing.assert_close(householder(h, 3.0 * w, mu), r)
    np.testing.assert_allclose(r.numpy(), _reference_reflection(h, w, mu).numpy(), atol=1e-5)


def test_bad_inputs_raise_quirky_error() -> None:
    model = _build("gpt2")
    with (
        pytest.raises(QuirkyError, match="out of range"),
        reflect_last_position(model, 5, torch.ones(D), torch.zeros(D)),
    ):
        pass
    with pytest.raises(QuirkyError, match="zero"):
        householder(torch.ones(2, D), torch.zeros(D), torch.zeros(D))
    ids = torch.randint(1, VOCAB, (1, 4))
    with (
        pytest.raises(QuirkyError, match="hidden size"),
        reflect_last_position(model, 0, torch.ones(D + 1), torch.zeros(D + 1)),
    ):
        _run(model, ids)


def _unbatched_log_odds(model, rows, answers, layer=None, w=None, mu=None):
    """One example at a time, no padding, no cache: the slow obvious computation."""
    out = []
    for r, a in zip(rows, answers, strict=True):
        ids = torch.tensor([r])
        with torch.no_grad():
            if layer is None:
                logits = model(input_ids=ids).logits
            else:
                with reflect_last_position(model, layer, w, mu):
                    logits = model(input_ids=ids).logits
        out.append((logits[0, -1, a[1]] - logits[0, -1, a[0]]).item())
    return torch.tensor(out)


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_batched_cached_experiment_matches_unbatched(model: torch.nn.Module, reuse_prefix: bool) -> None:
    """Batched, left-padded, with the prompt prefix's KV cache reused across layers (or full passes), equals
    one-example-at-a-time full forward passes, clean and with the hook at the first and the last layer."""
    from quirky.interventions.experiment import intervened_log_odds

    if not reuse_prefix and type(model).__name__ != "LlamaForCausalLM":
        pytest.skip("the full-pass path is model-independent; checked on Llama only to keep the suite fast")

    g = torch.Generator().manual_seed(3)
    lengths = [5, 2, 7, 3, 6]
    rows = [torch.randint(1, VOCAB, (k,), generator=g).tolist() for k in lengths]
    answers = torch.randint(1, VOCAB, (len(rows), 2), generator=g)
    layers = [0, LAYERS - 1]
    dirs, means = torch.randn(2, D, generator=g), torch.randn(2, D, generator=g)
    clean, hooked = intervened_log_odds(
        model,
        rows,
        answers,
        layers=layers,
        directions=dirs,
        means=means,
        pad_id=0,
        batch_size=2,
        reuse_prefix=reuse_prefix,
    )
    torch.testing.assert_close(clean, _unbatched_log_odds(model, rows, answers), atol=1e-4, rtol=1e-4)
    for i, layer in enumerate(layers):
        expected = _unbatched_log_odds(model, rows, answers, layer, dirs[i], means[i])
        torch.testing.assert_close(hooked[i], expected, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(hooked[i], clean)


# ------------------------------------------------------------------------------------------------ end to end
def _tiny_model_dir(path):
    """A random 4-layer Llama with a word-level tokenizer (digits split), saved like any local model."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = ["<pad>", "<unk>", "<s>", "</s>", *"0123456789", "+", "-", "*", "=", ".", ":", "^", "%", "?", ","]
    vocab += ["Alice", "Bob", "False", "True", "No", "Yes"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=D,
        intermediate_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory):
    """dataset -> tiny model -> real extraction -> real probes (mean-diff, lr on A)."""
    from quirky.datasets import build_dataset
    from quirky.experiments.evaluate import EvalSettings
    from quirky.experiments.transfer import TransferConfig, run_transfer
    from quirky.extraction.extract import ExtractSettings, extract

    root = tmp_path_factory.mktemp("interv")
    dataset = root / "datasets" / "addition"
    build_dataset("addition", dataset, seed=0, n_train=40, n_val=200, n_test=200)
    _tiny_model_dir(root / "model")
    act = root / "activations" / "tiny" / "addition"
    for split in ("validation", "test"):
        extract(
            str(root / "model"),
            dataset,
            split,
            act / split,
            device="cpu",
            progress=False,
            settings=ExtractSettings(batch_size=64, storage_dtype="float32"),
        )
    probes = root / "probes" / "tiny" / "addition"
    run_transfer(
        act,
        probes,
        TransferConfig(
            methods=("mean-diff", "lr"),
            experiments=("A->A,B",),
            eval=EvalSettings(n_boot=10, filters=("all",)),
        ),
    )
    return root


def test_intervene_cli_end_to_end(probe_run, tmp_path) -> None:
    """`quirky intervene` on a real probe run: the clean pass reproduces extraction's LM log-odds, the stored
    AUROCs are those of the stored log-odds, and an intervened value equals a hand-made reflection."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from quirky.cli import main
    from quirky.extraction.store import open_store
    from quirky.models import load_model
    from quirky.models.choices import encode_prompt, first_choice_tokens
    from quirky.probes import load_probe

    out = tmp_path / "out"
    args = [
        "intervene",
        "--model",
        str(probe_run / "model"),
        "--probes",
        str(probe_run / "probes/tiny/addition"),
        "--dataset",
        str(probe_run / "datasets/addition"),
        "--out",
        str(out),
        "--layers",
        "0,-1",
        "--max-examples",
        "30",
        "--device",
        "cpu",
        "--batch-size",
        "7",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    doc = json.loads((out / "interventions.json").read_text())
    table = pd.read_parquet(out / "log_odds.parquet")
    assert doc["config"]["layers"] == [0, 3] and doc["n"] == 30 == len(table)
    assert set(table["character"]) == {"Alice"}  # test subset defaults to the probe's persona (A)

    # the clean pass equals the LM log-odds extraction stored for the same examples
    test = open_store(probe_run / "activations/tiny/addition/test")
    stored = dict(zip(test.meta["id"], test.lm_log_odds().numpy(), strict=True))
    np.testing.assert_allclose(table["clean"], [stored[i] for i in table["id"]], atol=1e-4)

    # stored AUROCs are the AUROCs of the stored log-odds
    for r in doc["layers"]:
        col = table[f"layer_{r['layer']}"]
        assert r["auroc_alice"] == pytest.approx(roc_auc_score(table["alice_label"], col))
        assert r["auroc_bob"] == pytest.approx(roc_auc_score(table["bob_label"], col))
        assert r["flip_rate"] == pytest.approx(np.mean((col > 0) != (table["clean"] > 0)))
    assert doc["clean"]["auroc_alice"] == pytest.approx(roc_auc_score(table["alice_label"], table["clean"]))

    # layer 0, first example, by hand: mean-diff direction of the A probe through the mean of A's training states
    probe = load_probe(probe_run / "probes/tiny/addition/probes/A/mean-diff.safetensors")
    train = open_store(probe_run / "activations/tiny/addition/validation")
    mu = train.hiddens(0)[0][torch.as_tensor(train.mask("A"))].mean(dim=0)
    model, tok = load_model(str(probe_run / "model"), device="cpu")
    from quirky.datasets import load_templated

    row = load_templated(probe_run / "datasets/addition", "test").set_index("id").loc[table["id"].iloc[0]]
    ids = torch.tensor([encode_prompt(tok, row["statement"])])
    a0, a1 = first_choice_tokens(tok, row["statement"], list(row["choices"]))
    with torch.no_grad(), reflect_last_position(model, 0, probe.direction[0], mu):
        logits = model(input_ids=ids).logits[0, -1]
    assert table["layer_0"].iloc[0] == pytest.approx((logits[a1] - logits[a0]).item(), abs=1e-4)

    # a rerun with the same settings is served from the finished output
    before = (out / "interventions.json").stat().st_mtime_ns
    with pytest.raises(SystemExit):
        main(args)
    assert (out / "interventions.json").stat().st_mtime_ns == before


def test_intervene_random_and_bad_inputs(probe_run, tmp_path) -> None:
    from quirky.interventions.probe_source import direction_from_probe
    from quirky.interventions.runner import run_intervention

    common = {
        "model": str(probe_run / "model"),
        "probes": probe_run / "probes/tiny/addition",
        "dataset": probe_run / "datasets/addition",
        "max_examples": 12,
        "device": "cpu",
        "progress": False,
    }
    doc = run_intervention(out=tmp_path / "random", method="random", layers=[1], test_subset="all", **common)
    assert doc["config"]["probe"]["method"] == "random" and len(doc["layers"]) == 1
    with pytest.raises(QuirkyError, match="no lda probe trained on A"):
        run_intervention(out=tmp_path / "x", method="lda", **common)
    with pytest.raises(QuirkyError, match="out of range"):
        run_intervention(out=tmp_path / "x", layers=[9], **common)
    with pytest.raises(QuirkyError, match="unknown test subset"):
        run_intervention(out=tmp_path / "x", test_subset="C", **common)

    class PairProbe:
        name, pair, linear = "lr-on-pair", True, True

    with pytest.raises(QuirkyError, match="cannot define a reflection"):
        direction_from_probe(PairProbe(), None, "A", np.arange(3), {})
