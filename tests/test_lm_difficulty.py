"""LM-based difficulty: batched scoring equals one-at-a-time scoring and a hand computation on tiny random models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from quirky.datasets.lm_difficulty import (
    DifficultySettings,
    choice_log_odds,
    choice_log_probs,
    cross_entropy_from_log_odds,
    encode_choice,
    few_shot_prompts,
    lm_difficulty,
)
from quirky.errors import QuirkyError

WORDS = (
    "the",
    "a",
    "movie",
    "was",
    "good",
    "bad",
    "very",
    "not",
    "great",
    "terrible",
    "review",
    "is",
    "positive",
    "negative",
    "Q",
    "A",
    "Does",
    "imply",
    "contradict",
    "Yes",
    "No",
    "Imply",
    "Contradict",
    "dog",
    "cat",
    "runs",
    "sleeps",
    "on",
    "mat",
    "really",
    "quite",
    "okay",
)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in [*WORDS, ":", "?", ".", '"']:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _llama(vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def llama(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return _llama(len(tokenizer), 0)


PROMPTS = [
    "Q : the movie was good . A :",
    "Q : the movie was very very bad and the review is really quite negative . A :",
    "the dog sleeps",
    "Q : Does the cat sleep on the mat imply the cat sleeps ? A :",
    "a",
]
CHOICES = [
    (" No", " Yes"),
    (" very bad", " really quite good"),  # multi-token, different lengths
    (" Contradict", " Imply"),
    (" not great", " great"),
    (" No", " Yes"),
]


def _hand_log_prob(model, tokenizer, prompt: str, choice: str) -> float:
    """log p(choice | prompt) from one unpadded forward over BOS + prompt + choice."""
    prompt_ids = tokenizer(prompt)["input_ids"]  # with BOS
    choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    return sum(float(logp[len(prompt_ids) - 1 + k, t]) for k, t in enumerate(choice_ids))


def test_encode_choice_has_no_special_tokens_in_the_choice(tokenizer):
    context, continuation = encode_choice(tokenizer, "Q : the movie was good . A :", " very bad")
    assert context[0] == tokenizer.bos_token_id
    assert continuation == tokenizer.convert_tokens_to_ids(["very", "bad"])
    assert tokenizer.bos_token_id not in continuation


def test_batched_equals_unbatched_and_hand_computation(llama, tokenizer):
    one = choice_log_probs(llama, tokenizer, PROMPTS, CHOICES, batch_size=1)
    many = choice_log_probs(llama, tokenizer, PROMPTS, CHOICES, batch_size=4)
    np.testing.assert_allclose(many, one, atol=1e-5, rtol=0)
    hand = np.array(
        [[_hand_log_prob(llama, tokenizer, p, c) for c in cs] for p, cs in zip(PROMPTS, CHOICES, strict=True)]
    )
    np.testing.assert_allclose(one, hand, atol=1e-5, rtol=0)
    # a multi-token choice is a sum of several token log-probs: clearly below any single token's
    assert hand[1, 1] < -1.0
    lo = choice_log_odds(llama, tokenizer, PROMPTS, CHOICES, batch_size=3)
    np.testing.assert_allclose(lo, hand[:, 1] - hand[:, 0], atol=1e-5, rtol=0)


def test_absolute_position_model_is_pad_invariant(tokenizer):
    """GPT-2 has learned absolute positions: wrong position ids under left padding would change the numbers."""
    torch.manual_seed(1)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128)
    ).eval()
    one = choice_log_probs(gpt2, tokenizer, PROMPTS, CHOICES, batch_size=1)
    many = choice_log_probs(gpt2, tokenizer, PROMPTS, CHOICES, batch_size=5)
    np.testing.assert_allclose(many, one, atol=1e-5, rtol=0)
    hand = np.array(
        [[_hand_log_prob(gpt2, tokenizer, p, c) for c in cs] for p, cs in zip(PROMPTS, CHOICES, strict=True)]
    )
    np.testing.assert_allclose(one, hand, atol=1e-5, rtol=0)


def test_difficulty_is_mean_cross_entropy_over_models(llama, tokenizer):
    other = _llama(len(tokenizer), 7)
    labels = np.array([True, False, True, False, True])
    got = lm_difficulty(PROMPTS, CHOICES, labels, [(llama, tokenizer), (other, tokenizer)], batch_size=2)
    expected = []
    for m in (llama, other):
        lo = torch.tensor(choice_log_odds(m, tokenizer, PROMPTS, CHOICES, batch_size=1))
        s = torch.where(torch.tensor(labels), 1.0, -1.0).double()
        expected.append((-torch.nn.functional.logsigmoid(s * lo)).numpy())
    np.testing.assert_allclose(got, np.mean(expected, axis=0), atol=1e-6)
    # the loss is large when the model is confidently wrong and ~0 when confidently right
    np.testing.assert_allclose(
        cross_entropy_from_log_odds(np.array([50.0, -50.0]), np.array([True, True])), [0.0, 50.0], atol=1e-12
    )


def test_local_model_directory_is_loaded(llama, tokenizer, tmp_path):
    llama.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    labels = np.array([True, False, True, False, True])
    by_path = lm_difficulty(PROMPTS, CHOICES, labels, [str(tmp_path / "m")], batch_size=4)
    by_pair = lm_difficulty(PROMPTS, CHOICES, labels, [(llama, tokenizer)], batch_size=4)
    np.testing.assert_allclose(by_path, by_pair, atol=1e-5)
    with pytest.raises(QuirkyError, match="nope"):
        lm_difficulty(PROMPTS, CHOICES, labels, [str(tmp_path / "nope")])


def test_truncation_keeps_the_end(llama, tokenizer):
    long_prompt = " ".join(["the movie was good ."] * 40) + " A :"
    lp = choice_log_probs(llama, tokenizer, [long_prompt], [(" No", " Yes")], max_length=16)
    ids = tokenizer(long_prompt)["input_ids"][-16:]
    with torch.no_grad():
        logp = torch.log_softmax(llama(torch.tensor([ids])).logits[0, -1].double(), dim=-1)
    yes, no = tokenizer.convert_tokens_to_ids(["Yes", "No"])
    np.testing.assert_allclose(lp[0], [float(logp[no]), float(logp[yes])], atol=1e-5)


def test_settings_and_few_shot():
    s = DifficultySettings.from_options({}, "nli")
    assert s.resolve(has_column=False, dataset="nli") == "proxy"
    assert s.resolve(has_column=True, dataset="nli") == "column"
    s = DifficultySettings.from_options({"difficulty_models": ["x"]}, "nli")
    assert s.resolve(has_column=False, dataset="nli") == "lm"
    with pytest.raises(QuirkyError, match="difficulty_models"):
        DifficultySettings.from_options({"difficulty": "lm"}, "nli")
    with pytest.raises(QuirkyError, match="not one of"):
        DifficultySettings.from_options({"difficulty": "magic"}, "nli")
    with pytest.raises(QuirkyError, match="no `difficulty` column"):
        DifficultySettings.from_options({"difficulty": "column"}, "nli").resolve(False, "nli")

    pool = [(f"T{i}", i % 2 == 0) for i in range(10)]
    out = few_shot_prompts(np.random.default_rng(0), ["target"], pool, (" N", " P"), 5)
    blocks = out[0].split("\n\n")
    assert blocks[-1] == "target" and len(blocks) == 6
    n_pos = sum(b.endswith(" P") for b in blocks[:-1])
    assert n_pos in (2, 3)
    for b in blocks[:-1]:  # every demonstration carries its own label's answer
        i = int(b.split()[0][1:])
        assert b.endswith(" P" if i % 2 == 0 else " N")
    assert out == few_shot_prompts(np.random.default_rng(0), ["target"], pool, (" N", " P"), 5)


def test_datasets_use_the_model_panel(llama, tokenizer, tmp_path):
    """The sentiment/nli/sciq builders score their zero-shot prompts with the given models (shots=0 here)."""
    from quirky.datasets import nli, sciq, sentiment
    from quirky.datasets.build import resolve_options
    from quirky.datasets.spec import BuildRequest

    reviews = tmp_path / "reviews.csv"
    pd.DataFrame(
        {
            "title": ["a", "b", "c", "d"],
            "text": ["good movie", "bad movie", "very good", "not great"],
            "label": [1, 0, 1, 0],
        }
    ).to_csv(reviews, index=False)
    pairs = tmp_path / "nli.csv"
    pd.DataFrame(
        {
            "premise": ["the dog runs", "the cat sleeps", "a dog", "the mat"],
            "hypothesis": ["a dog runs", "no cat sleeps", "the dog", "not the mat"],
            "label": ["entailment", "contradiction", "entailment", "contradiction"],
        }
    ).to_csv(pairs, index=False)
    questions = tmp_path / "sciq.csv"
    pd.DataFrame(
        {
            "question": ["Q1 ?", "Q2 ?"],
            "support": ["the cat sleeps on the mat", "the dog runs"],
            "correct_answer": ["mat", "dog runs"],
            "distractor1": ["dog", "cat"],
            "distractor2": ["dog", "cat"],
            "distractor3": ["dog", "cat"],
        }
    ).to_csv(questions, index=False)
    panel = {"difficulty_models": [(llama, tokenizer)], "difficulty_shots": 0, "difficulty_batch_size": 3}

    def build(module, source):
        opts = resolve_options(module.SPEC, panel)
        return module.SPEC.build_base(BuildRequest(None, np.random.default_rng(0), source, opts))

    df = build(sentiment, reviews)
    prompts = [
        sentiment.ZERO_SHOT.format(title=t, review=r) for t, r in zip(df["title"], df["review"], strict=True)
    ]
    expected = lm_difficulty(
        prompts, [sentiment.ZERO_SHOT_CHOICES] * len(df), df["alice_label"], [(llama, tokenizer)]
    )
    np.testing.assert_allclose(df["difficulty"], expected, atol=1e-6)

    df = build(nli, pairs)
    prompts = [
        nli.ZERO_SHOT.format(premise=p, hypothesis=h)
        for p, h in zip(df["premise"], df["hypothesis"], strict=True)
    ]
    expected = lm_difficulty(
        prompts, [nli.ZERO_SHOT_CHOICES] * len(df), df["alice_label"], [(llama, tokenizer)]
    )
    np.testing.assert_allclose(df["difficulty"], expected, atol=1e-6)

    df = build(sciq, questions)
    for _, group in df.groupby("question", sort=False):
        support, question = group["support"].iat[0], group["question"].iat[0]
        correct, wrong = group["answer"].iat[0], group["answer"].iat[1]
        lo = choice_log_odds(
            llama,
            tokenizer,
            [sciq.ZERO_SHOT.format(support=support, question=question)],
            [(" " + wrong, " " + correct)],
        )
        np.testing.assert_allclose(
            group["difficulty"], cross_entropy_from_log_odds(lo, [True]).repeat(2), atol=1e-6
        )

    # with few-shot demonstrations the pool is held out from the questions and every difficulty is finite
    opts = resolve_options(sentiment.SPEC, {**panel, "difficulty_shots": 2})
    few = sentiment.SPEC.build_base(BuildRequest(None, np.random.default_rng(0), reviews, opts))
    assert len(few) == 4 - 2 and np.isfinite(few["difficulty"]).all()
