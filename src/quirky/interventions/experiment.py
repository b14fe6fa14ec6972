"""The intervention experiment: the LM's answer log-odds before and after reflecting the probe direction, per layer.

Why it is cheap here.  The reflection changes only the last prompt position, and in a causal model no earlier
position can see it, so every earlier position's keys and values are the same as in the clean run.  Each batch is
therefore run once over the prompt *minus its last token* (keeping the KV cache), then once per layer over just the
last token with a fresh copy of that cache: the clean pass and the prefix are computed once, not once per layer
(the original, `elk_generalization/interventions/intervene.py`, re-ran the whole clean forward pass, batch size 1,
at every layer).
`reuse_prefix=False` runs full forward passes instead (for models whose cache cannot be copied); the tests check
that both give the same numbers as an unbatched, uncached run.

Prompts are left-padded with explicit position ids, so the last column is every row's last prompt token and
padding does not shift positions.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from quirky.errors import QuirkyError
from quirky.interventions.reflect import LastLayerSite, _unwrap, num_layers, reflect_last_position
from quirky.models.choices import encode_prompt, first_choice_tokens
from quirky.scoring import auroc
from quirky.subsets import EASY, HARD, check_subset, subset_mask


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], choices: Sequence[Sequence[str]]
) -> tuple[list[list[int]], torch.Tensor]:
    """Token ids of every prompt (as `quirky.models.choices.encode_prompt`, the same as extraction) and the first
    answer token of choice 0 and choice 1 after it: `[n, 2]`."""
    if len(prompts) != len(choices):
        raise QuirkyError(f"{len(prompts)} prompts but {len(choices)} choice pairs")
    ids, answer = [], []
    for prompt, pair in zip(prompts, choices, strict=True):
        p = encode_prompt(tokenizer, prompt)
        if not p:
            raise QuirkyError(f"prompt {prompt[:40]!r} encodes to no tokens")
        ids.append(p)
        answer.append(first_choice_tokens(tokenizer, prompt, list(pair), p))
    return ids, torch.tensor(answer, dtype=torch.long)


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


def _cache_kwarg(model: nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache`; use whichever this version's forward accepts."""
    params = inspect.signature(_unwrap(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(_unwrap(model).forward).parameters


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _LastTokenForward:
    """The answer log-odds of one left-padded batch; called once clean and once per hooked layer.

    With `reuse_prefix`, the prompt minus its last token is run once at construction and each call runs only the
    last token on a deep copy of that KV cache (a cache is mutated in place by a forward pass, so sharing one
    between calls would leak one call's last token into the next).
    """

    def __init__(
        self,
        model: nn.Module,
        ids: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        answers: torch.Tensor,
        *,
        reuse_prefix: bool,
    ) -> None:
        self.model, self.ids, self.mask, self.pos, self.answers = model, ids, mask, pos, answers
        self.rows = torch.arange(ids.shape[0], device=ids.device)
        # only the last position's logits are read: skip the vocabulary projection everywhere else
        self.keep = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
        self.prefix_cache = None
        if reuse_prefix and ids.shape[1] > 1:
            prefix = model(
                input_ids=ids[:, :-1],
                attention_mask=mask[:, :-1],
                position_ids=pos[:, :-1],
                use_cache=True,
                **self.keep,
            )
            self.prefix_cache = _returned_cache(prefix)
            if self.prefix_cache is None:
                raise QuirkyError(
                    f"{type(model).__name__} returned no KV cache; rerun with reuse_prefix=False"
                )
            self.cache_kw = _cache_kwarg(model)

    def __call__(self) -> torch.Tensor:
        if self.prefix_cache is not None:
            kwargs = {self.cache_kw: copy.deepcopy(self.prefix_cache)}
            out = self.model(
                input_ids=self.ids[:, -1:],
                attention_mask=self.mask,
                position_ids=self.pos[:, -1:],
                use_cache=True,
                **kwargs,
            )
        else:
            out = self.model(
                input_ids=self.ids,
                attention_mask=self.mask,
                position_ids=self.pos,
                use_cache=False,
                **self.keep,
            )
        last = out.logits[:, -1].float()
        return (last[self.rows, self.answers[:, 1]] - last[self.rows, self.answers[:, 0]]).cpu()


@torch.inference_mode()
def intervened_log_odds(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    answer_ids: torch.Tensor,
    *,
    layers: Sequence[int],
    directions: torch.Tensor,
    means: torch.Tensor,
    pad_id: int,
    batch_size: int = 16,
    last_layer: LastLayerSite = "post-norm",
    reuse_prefix: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer log-odds logit(choice 1) − logit(choice 0) at the last prompt token.

    Returns `(clean [n], intervened [len(layers), n])`, where row i reflects layer `layers[i]` across
    `directions[i]` through `means[i]`.  Float32 on the CPU.
    """
    n = len(prompt_ids)
    if directions.shape[0] != len(layers) or means.shape != directions.shape:
        raise QuirkyError(
            f"need one direction and mean per layer: {len(layers)} layers, directions {tuple(directions.shape)}, "
            f"means {tuple(means.shape)}"
        )
    if batch_size < 1:
        raise QuirkyError(f"batch size must be at least 1, got {batch_size}")
    total = num_layers(model)
    for layer in layers:
        if not -total <= layer < total:
            raise QuirkyError(f"layer {layer} is out of range: the model has {total} layers (0..{total - 1})")
    device = _device(model)
    clean = torch.empty(n, dtype=torch.float32)
    hooked = torch.empty((len(layers), n), dtype=torch.float32)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        forward = _LastTokenForward(
            model,
            *(t.to(device) for t in _left_pad(prompt_ids[start:stop], pad_id)),
            answer_ids[start:stop].to(device),
            reuse_prefix=reuse_prefix,
        )
        clean[start:stop] = forward()
        for i, layer in enumerate(layers):
            with reflect_last_position(model, layer, directions[i], means[i], last_layer=last_layer):
                hooked[i, start:stop] = forward()
        if on_batch is not None:
            on_batch(stop, n)
    return clean, hooked


def auroc_or_none(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """AUROC of `scores` against binary `labels` (`quirky.scoring.auroc`); None (JSON null) when only one class
    is present."""
    value = auroc(scores, np.asarray(labels).astype(int))
    return None if math.isnan(value) else value


def summarize(
    clean: np.ndarray, hooked: np.ndarray, layers: Sequence[int], alice: np.ndarray, bob: np.ndarray
) -> dict[str, Any]:
    """Per-layer AUROC of the LM's log-odds against Alice's and Bob's labels, before and after the reflection,
    plus how often the intervention flips the LM's answer (sign of the log-odds) and the mean log-odds change."""
    clean_sign = clean > 0
    per_layer = []
    for i, layer in enumerate(layers):
        after = hooked[i]
        per_layer.append(
            {
                "layer": int(layer),
                "auroc_alice": auroc_or_none(after, alice),
                "auroc_bob": auroc_or_none(after, bob),
                "flip_rate": float(np.mean((after > 0) != clean_sign)),
                "mean_change": float(np.mean(after - clean)),
            }
        )
    return {
        "n": len(clean),
        "clean": {"auroc_alice": auroc_or_none(clean, alice), "auroc_bob": auroc_or_none(clean, bob)},
        "layers": per_layer,
    }


def select_examples(
    df: Any, subset: str, max_examples: int | None, *, easy: float = EASY, hard: float = HARD
) -> Any:
    """Rows of a templated split in `subset` (persona A/B, difficulty E/H: `quirky.subsets`), first
    `max_examples` of them (splits are stored in random question order, so a prefix is a random sample)."""
    check_subset(subset, "test subset")
    out = df[subset_mask(df, subset, easy, hard)]
    if max_examples is not None:
        if max_examples < 1:
            raise QuirkyError(f"--max-examples must be at least 1, got {max_examples}")
        out = out.iloc[:max_examples]
    if len(out) == 0:
        raise QuirkyError(f"the test split has no examples in subset {subset}; choose another --test-subset")
    return out.reset_index(drop=True)
