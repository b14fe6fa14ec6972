"""Token ids of the answer choices *in context*.

Why not `tokenizer.encode(choice)`: SentencePiece tokenizers (Llama-2, Mistral) encode " Yes" on its own as
["▁", "Yes"] (the leading space split off), so every choice would share the first token "▁", and BPE tokenizers
may merge the choice with the end of the prompt.  The tokens the model actually sees after the prompt are those of
`encode(prompt + choice)` past `encode(prompt)`, so that is what we use, and we check that the prompt's own tokens
are a prefix (otherwise the prompt and the choice merged across the boundary and there is no clean answer token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quirky.errors import QuirkyError


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """The prompt's ids as the model sees them: the tokenizer's special tokens added once (a BOS for Llama-style
    tokenizers) and a trailing EOS removed if the tokenizer appends one (the answer must follow the text)."""
    ids = list(tokenizer(text, add_special_tokens=True).input_ids)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and len(ids) > 1 and ids[-1] == eos:
        plain = tokenizer(text, add_special_tokens=False).input_ids
        if not plain or plain[-1] != eos:
            ids = ids[:-1]
    return ids


def choice_tokens_in_context(
    tokenizer: Any, prompt: str, choices: Sequence[str], prompt_ids: Sequence[int] | None = None
) -> list[list[int]]:
    """For each choice, the ids it adds after `prompt` (at least one; the first is the answer token)."""
    if prompt_ids is None:
        prompt_ids = encode_prompt(tokenizer, prompt)
    out = []
    for choice in choices:
        full = encode_prompt(tokenizer, prompt + choice)
        k = len(prompt_ids)
        if full[:k] != list(prompt_ids):
            raise QuirkyError(
                f"the answer choice {choice!r} merges with the end of the prompt when tokenized "
                f"(prompt ends with {prompt[-20:]!r}), so it has no token of its own; end prompts without "
                "trailing whitespace and start choices with a space (e.g. ' Yes')"
            )
        if len(full) == k:
            raise QuirkyError(f"the answer choice {choice!r} adds no tokens after the prompt")
        out.append(full[k:])
    return out


def first_choice_tokens(
    tokenizer: Any, prompt: str, choices: Sequence[str], prompt_ids: Sequence[int] | None = None
) -> tuple[int, int]:
    """First answer token of choice 0 and choice 1 after `prompt`; a clear error when they coincide."""
    if len(choices) != 2:
        raise QuirkyError(f"expected exactly 2 answer choices, got {len(choices)}: {list(choices)!r}")
    toks = choice_tokens_in_context(tokenizer, prompt, choices, prompt_ids)
    if toks[0][0] == toks[1][0]:
        raise QuirkyError(
            f"the answer choices {choices[0]!r} and {choices[1]!r} start with the same token "
            f"({tokenizer.convert_ids_to_tokens(toks[0][0])!r}) for this tokenizer, so first-token log-odds "
            "cannot tell them apart; use choices whose first tokens differ"
        )
    return toks[0][0], toks[1][0]


def _strip_eos(tokenizer: Any, ids: list[int], plain_last: int | None) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and len(ids) > 1 and ids[-1] == eos and plain_last != eos:
        return ids[:-1]
    return ids


def _encode_many(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """`encode_prompt` for many texts at once (one fast-tokenizer call instead of one per text)."""
    with_special = tokenizer(texts, add_special_tokens=True).input_ids
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None or not any(len(ids) > 1 and ids[-1] == eos for ids in with_special):
        return [list(ids) for ids in with_special]
    plain = tokenizer(texts, add_special_tokens=False).input_ids
    return [
        _strip_eos(tokenizer, list(a), b[-1] if b else None) for a, b in zip(with_special, plain, strict=True)
    ]


def encode_with_choices(
    tokenizer: Any, prompts: Sequence[str], choices: Sequence[Sequence[str]]
) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Prompt ids and the in-context token ids of choice 0 and choice 1 for many examples at once.

    Same rules as `first_choice_tokens` (prefix check, distinct first tokens), with the failing example's index
    in the error message.
    """
    prompts = [str(p) for p in prompts]
    pairs = [(str(c[0]), str(c[1])) for c in choices]
    if any(len(c) != 2 for c in choices):
        raise QuirkyError("every example needs exactly 2 answer choices")
    p_ids = _encode_many(tokenizer, prompts)
    outs: list[list[list[int]]] = []
    for side in (0, 1):
        full = _encode_many(tokenizer, [p + c[side] for p, c in zip(prompts, pairs, strict=True)])
        side_out = []
        for i, (ids, f) in enumerate(zip(p_ids, full, strict=True)):
            k = len(ids)
            if f[:k] != ids or len(f) == k:
                # Re-run the single-example path for its precise error message.
                try:
                    choice_tokens_in_context(tokenizer, prompts[i], pairs[i], ids)
                except QuirkyError as e:
                    raise QuirkyError(f"example {i}: {e}") from None
            side_out.append(f[k:])
        outs.append(side_out)
    for i, (a, b) in enumerate(zip(outs[0], outs[1], strict=True)):
        if a[0] == b[0]:
            try:
                first_choice_tokens(tokenizer, prompts[i], pairs[i], p_ids[i])
            except QuirkyError as e:
                raise QuirkyError(f"example {i}: {e}") from None
    return p_ids, outs[0], outs[1]
