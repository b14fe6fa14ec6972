"""Turn templated quirky examples into token tensors for the answer-token-only loss.

Why this shape: the original trained with cross-entropy on the *first token of the target answer* only
(`LastTokenOnlyDataCollator` in `elk_generalization/training/sft.py`), but built its inputs by decoding token ids
back to text and letting the trainer re-tokenize them (a second BOS for Llama/Mistral) and found the answer
position through pad == eos.  Here each prompt is tokenized exactly once, the way extraction tokenizes it, the
target is a token id (never re-tokenized text), and every position comes from the true sequence lengths, so the
pad token's identity is irrelevant.  Batches are right-padded; the loss reads the logits at each row's last prompt
token.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from quirky.errors import QuirkyError


@dataclass(frozen=True)
class EncodedExamples:
    """Tokenized examples, in input order.

    `prompts[i]`: prompt token ids (special tokens as the tokenizer adds them, at most once);
    `choice_ids[i]`: the first token ids of (negative, positive) choices;
    `label`/`alice_label`/`bob_label`: 0/1; `character`: "Alice"/"Bob"; `truncated`: how many prompts were cut.
    """

    prompts: list[list[int]]
    choice_ids: np.ndarray  # [n, 2] int64
    label: np.ndarray  # [n] int64, the persona's label (the training target)
    alice_label: np.ndarray
    bob_label: np.ndarray
    character: np.ndarray  # [n] object
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def targets(self) -> np.ndarray:
        """The token id the model is trained to emit: the first token of `choices[label]`."""
        return self.choice_ids[np.arange(len(self)), self.label]


def encode_examples(tokenizer: Any, df: pd.DataFrame, max_length: int) -> EncodedExamples:
    """Encode a templated frame (columns `statement, choices, label, alice_label, bob_label, character`).

    Prompt ids and answer tokens come from `quirky.models.choices.encode_with_choices`, the encoding extraction
    uses, so the trained answer token is the one whose logit extraction reads.  It raises `QuirkyError` when a
    row's two choices do not start with distinct tokens (a first-token loss could not tell them apart).  Prompts
    longer than `max_length - 1` tokens keep their last tokens (left truncation, as the original did), so the
    question and persona that decide the answer survive.
    """
    from quirky.models.choices import encode_with_choices

    missing = [
        c for c in ("statement", "choices", "label", "alice_label", "bob_label", "character") if c not in df
    ]
    if missing:
        raise QuirkyError(f"finetuning needs templated examples; missing column(s) {', '.join(missing)}.")
    prompt_ids, neg, pos = encode_with_choices(tokenizer, df["statement"].tolist(), df["choices"].tolist())
    keep = max_length - 1
    prompts: list[list[int]] = []
    truncated = 0
    for text, ids in zip(df["statement"].tolist(), prompt_ids, strict=True):
        if not ids:
            raise QuirkyError(f"prompt {text!r} encodes to no tokens.")
        if len(ids) > keep:
            ids = ids[-keep:]
            truncated += 1
        prompts.append(list(ids))
    choice_ids = np.array([[n[0], p[0]] for n, p in zip(neg, pos, strict=True)], dtype=np.int64).reshape(
        -1, 2
    )
    return EncodedExamples(
        prompts=prompts,
        choice_ids=choice_ids,
        label=df["label"].to_numpy(dtype=np.int64),
        alice_label=df["alice_label"].to_numpy(dtype=np.int64),
        bob_label=df["bob_label"].to_numpy(dtype=np.int64),
        character=df["character"].astype(str).to_numpy(dtype=object),
        truncated=truncated,
    )


@dataclass
class Batch:
    """A right-padded batch: `input_ids`/`attention_mask` [B, L], `last` [B] the index of each row's last prompt
    token (whose logits predict the answer), `targets` [B] the answer token ids, `choice_ids` [B, 2]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    last: torch.Tensor
    targets: torch.Tensor
    choice_ids: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            *(
                t.to(device)
                for t in (self.input_ids, self.attention_mask, self.last, self.targets, self.choice_ids)
            )
        )

    def labels(self) -> torch.Tensor:
        """The same loss in the usual causal-LM form: for `input_ids` with each row's answer token written at
        `last + 1` (see `with_answers`), labels are -100 everywhere except that position."""
        n, length = self.input_ids.shape
        labels = torch.full((n, length + 1), -100, dtype=torch.long)
        labels[torch.arange(n), self.last + 1] = self.targets
        return labels

    def with_answers(self, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_ids`/`attention_mask` with each row's answer token appended after its prompt (for `labels()`)."""
        n, length = self.input_ids.shape
        ids = torch.full((n, length + 1), pad_id, dtype=self.input_ids.dtype)
        ids[:, :length] = self.input_ids
        mask = torch.zeros((n, length + 1), dtype=self.attention_mask.dtype)
        mask[:, :length] = self.attention_mask
        rows = torch.arange(n)
        ids[rows, self.last + 1] = self.targets
        mask[rows, self.last + 1] = 1
        return ids, mask


def pad_id_of(tokenizer: Any) -> int:
    """Any id works for padding (positions come from lengths, padded positions are masked and never read)."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def collate(examples: EncodedExamples, indices: Sequence[int] | np.ndarray, pad_id: int) -> Batch:
    """Right-pad the prompts of `indices` into one batch."""
    idx = [int(i) for i in indices]
    lengths = [len(examples.prompts[i]) for i in idx]
    width = max(lengths)
    input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, (i, n) in enumerate(zip(idx, lengths, strict=True)):
        input_ids[row, :n] = torch.tensor(examples.prompts[i], dtype=torch.long)
        attention_mask[row, :n] = 1
    choice_ids = torch.from_numpy(examples.choice_ids[idx])
    label = torch.from_numpy(examples.label[idx])
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        last=torch.tensor(lengths, dtype=torch.long) - 1,
        targets=choice_ids[torch.arange(len(idx)), label],
        choice_ids=choice_ids,
    )


def _accepts_logits_to_keep(model: Any) -> bool:
    """Whether the causal LM under any DDP / peft wrappers takes `logits_to_keep` (transformers >= 4.50 models)."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):  # DDP and similar wrappers
        inner = inner.module
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def last_token_logits(model: Any, batch: Batch) -> torch.Tensor:
    """Logits [B, V] at each row's last prompt token.

    Only those positions go through the output head (`logits_to_keep` as a [B, 1] position tensor): on a 49k-token
    vocabulary the head would otherwise cost ~20% of a small model's step.  Models whose forward lacks
    `logits_to_keep` compute the full logits instead (same values).
    """
    if _accepts_logits_to_keep(model):
        out = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=batch.last[:, None]
        )
        return out.logits[:, 0]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device)
    return out.logits[rows, batch.last]


def answer_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the answer token over the full vocabulary (the original's first-token SFT loss)."""
    return torch.nn.functional.cross_entropy(logits.float(), batch.targets)
