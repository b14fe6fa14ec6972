"""Tiny random causal LMs and tokenizers built in-process, for tests and offline demos.

Why: tests must never download a model, yet they must exercise the real architectures whose quirks matter for
batching (rotary vs absolute positions, grouped-query attention, sliding windows).  A byte-level BPE trained in a
few milliseconds on the test prompts tokenizes any text, like real tokenizers do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

ARCHITECTURES = ("llama", "mistral", "gpt_neox", "gpt2")


def tiny_tokenizer(texts: Iterable[str], *, bos: bool = False, vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer trained on `texts` (any text still encodes: bytes are the base alphabet).

    `bos=True` prepends `<s>` to every encoding, like Llama/Mistral tokenizers.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_model(
    arch: str, vocab_size: int, *, seed: int = 0, layers: int = 3, hidden: int = 32, **overrides: Any
) -> Any:
    """A randomly initialised tiny causal LM of the given architecture, in eval mode, float32."""
    import transformers as tf

    common = {"vocab_size": vocab_size, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if arch == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            **common,
        )
        cls = tf.LlamaForCausalLM
    elif arch == "mistral":
        cfg = tf.MistralConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            sliding_window=64,
            **common,
        )
        cls = tf.MistralForCausalLM
    elif arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=128,
            **common,
        )
        cls = tf.GPTNeoXForCausalLM
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=128, **common)
        cls = tf.GPT2LMHeadModel
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {ARCHITECTURES}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    model = cls(cfg)
    # Random init gives near-uniform logits; scaling the embeddings makes log-odds and states less degenerate.
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(5.0)
    return model.eval()
