"""Batched forward passes that yield, per example, everything a store holds.

For each example (prompt ids P, choice-0 ids A, choice-1 ids B) we need the residual stream of every layer at the
last prompt token, the state at the first appended token of each choice (the contrast pair), and the logits at
the last prompt token.  Two strategies, both exact up to float rounding:

* `packed` (default): ONE sequence per example, ``P + A + B``, with position ids ``0..|P|-1, |P|.., |P|..`` and a
  4D attention mask in which A and B both see P but not each other.  Cost ~ |P| + 2 tokens per example, and no
  KV cache is shared or mutated (the original's bug §9.1-14 cannot happen).
* `duplicate`: two ordinary sequences per example, ``P + A`` and ``P + B`` (2D padding mask).  Costs ~2|P|
  tokens; used for attention implementations that ignore custom 4D masks, and as the reference in a self-check.

Sequences are left-padded; position ids are explicit, so models with absolute position embeddings (GPT-2) see
the same positions as in an unpadded pass.  Logits are computed only for the few positions needed
(`logits_to_keep`), not the whole vocabulary at every position.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch

Strategy = Literal["packed", "duplicate"]


@dataclass
class BatchResult:
    hiddens: torch.Tensor  # [L, B, d] last prompt token
    pairs: torch.Tensor  # [L, B, 2, d] first appended token of choice 0 / choice 1
    lm_log_odds: torch.Tensor  # [B] logit(c1[0]) - logit(c0[0]) at the last prompt token
    lm_log_odds_full: torch.Tensor | None  # [B] sum log p(c1 tokens) - sum log p(c0 tokens)


def _sliding_window(model: Any) -> int | None:
    window = getattr(model.config, "sliding_window", None)
    return int(window) if isinstance(window, int) and window > 0 else None


def packed_supported(model: Any, max_len: int) -> bool:
    """Whether custom 4D masks reach this model's attention unchanged (eager/sdpa) and no mixed sliding/global
    layer pattern would be flattened by one shared mask."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in ("eager", "sdpa"):
        return False
    layer_types = getattr(model.config, "layer_types", None)
    window = _sliding_window(model)
    return not (layer_types and len(set(layer_types)) > 1 and window is not None and max_len > window)


def _accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.inference_mode()
def forward_batch(
    model: Any,
    prompts: list[list[int]],
    choice0: list[list[int]],
    choice1: list[list[int]],
    *,
    pad_id: int,
    strategy: Strategy = "packed",
    full_log_odds: bool = False,
) -> BatchResult:
    """Run one batch.  `choice0/1` are the appended ids (only the first is used unless `full_log_odds`)."""
    if not full_log_odds:
        choice0 = [c[:1] for c in choice0]
        choice1 = [c[:1] for c in choice1]
    bsz = len(prompts)
    device = model.device
    if strategy == "packed":
        rows = [p + a + b for p, a, b in zip(prompts, choice0, choice1, strict=True)]
        # per token: position id and segment (0 prompt, 1 choice0, 2 choice1)
        pos_rows = [
            list(range(len(p))) + list(range(len(p), len(p) + len(a))) + list(range(len(p), len(p) + len(b)))
            for p, a, b in zip(prompts, choice0, choice1, strict=True)
        ]
        seg_rows = [
            [0] * len(p) + [1] * len(a) + [2] * len(b)
            for p, a, b in zip(prompts, choice0, choice1, strict=True)
        ]
    else:
        rows, pos_rows, seg_rows = [], [], []
        for p, a, b in zip(prompts, choice0, choice1, strict=True):
            for c in (a, b):
                rows.append(p + c)
                pos_rows.append(list(range(len(p) + len(c))))
                seg_rows.append([0] * len(p) + [1] * len(c))
    T = max(len(r) for r in rows)
    R = len(rows)
    ids = torch.full((R, T), pad_id, dtype=torch.long)
    pos = torch.zeros((R, T), dtype=torch.long)
    seg = torch.full((R, T), -1, dtype=torch.long)
    for i, (r, p, s) in enumerate(zip(rows, pos_rows, seg_rows, strict=True)):
        ids[i, T - len(r) :] = torch.tensor(r)
        pos[i, T - len(r) :] = torch.tensor(p)
        seg[i, T - len(r) :] = torch.tensor(s)
    real = seg >= 0

    # What to read out, as (row, column) pairs.  Left padding puts every row's end at column T-1.
    ar = torch.arange(bsz)
    if strategy == "packed":
        la = torch.tensor([len(a) for a in choice0])
        lb = torch.tensor([len(b) for b in choice1])
        row_last = row_c0 = row_c1 = ar
        col_last = col_last1 = T - 1 - la - lb
        col_c0 = T - la - lb
        col_c1 = T - lb
    else:
        la = torch.tensor([len(a) for a in choice0])
        lb = torch.tensor([len(b) for b in choice1])
        row_last = row_c0 = 2 * ar
        row_c1 = 2 * ar + 1
        col_last = T - 1 - la
        col_last1 = T - 1 - lb  # the last prompt token in choice 1's row
        col_c0 = T - la
        col_c1 = T - lb

    kwargs: dict[str, Any] = {"output_hidden_states": True, "use_cache": False}
    if strategy == "packed":
        allowed = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])  # key k visible to query q
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        allowed &= causal & real[:, None, :] & real[:, :, None]
        window = _sliding_window(model)
        if window is not None:
            allowed &= (pos[:, :, None] - pos[:, None, :]) < window
        allowed |= torch.eye(T, dtype=torch.bool)  # padding queries see themselves: no all-masked rows (NaN)
        dtype = model.dtype if model.dtype.is_floating_point else torch.float32
        mask = torch.zeros((R, 1, T, T), dtype=dtype)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
        kwargs["attention_mask"] = mask.to(device)
    else:
        kwargs["attention_mask"] = real.long().to(device)
    keep = int(
        (T - torch.minimum(col_last, col_last1).min()).item()
    )  # every logit we need lies in the last `keep` columns
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    out = model(input_ids=ids.to(device), position_ids=pos.to(device), **kwargs)
    logits = out.logits[:, -keep:].float().cpu()
    off = T - keep

    layers = out.hidden_states[1:]
    hid = torch.stack([h[row_last, col_last] for h in layers]).float().cpu()
    p0 = torch.stack([h[row_c0, col_c0] for h in layers]).float().cpu()
    p1 = torch.stack([h[row_c1, col_c1] for h in layers]).float().cpu()
    pairs = torch.stack([p0, p1], dim=2)

    first0 = torch.tensor([a[0] for a in choice0])
    first1 = torch.tensor([b[0] for b in choice1])
    last_logits = logits[row_last, col_last - off]
    lo = last_logits[ar, first1] - last_logits[ar, first0]

    lo_full = None
    if full_log_odds:
        logp = torch.log_softmax(logits, dim=-1)
        totals = torch.zeros(2, bsz, dtype=torch.float64)
        sides = ((choice0, row_c0, col_last, col_c0), (choice1, row_c1, col_last1, col_c1))
        for side, (choices, rws, c_last, c_first) in enumerate(sides):
            for i, toks in enumerate(choices):
                r = int(rws[i])
                # token j is predicted at the last prompt column (j=0), else at the column of token j-1
                cols = [int(c_last[i])] + [int(c_first[i]) + j - 1 for j in range(1, len(toks))]
                totals[side, i] = sum(float(logp[r, c - off, t]) for c, t in zip(cols, toks, strict=True))
        lo_full = (totals[1] - totals[0]).float()
    return BatchResult(hiddens=hid, pairs=pairs, lm_log_odds=lo, lm_log_odds_full=lo_full)
