"""Batched forward passes that yield, per example, everything a store holds.

For each example (prompt ids P, choice-0 ids A, choice-1 ids B) we need the residual stream of every layer at the
last prompt token, the state at the first appended token of each choice (the contrast pair), and the logits at
the last prompt token.  Two strategies, both exact up to float rounding:

* `packed` (default): examples whose prompts share a token prefix (Alice's and Bob's versions of a question,
  prompts of one template) are packed into ONE sequence: ``prefix | suffix_1 A_1 B_1 | suffix_2 A_2 B_2 | ...``
  with explicit position ids (each member counts on from the prefix; A and B both start at |P|) and a 4D
  attention mask under which each token sees the shared prefix, its own member's prompt suffix and, for answer
  tokens, only its own answer.  So the prefix is computed once, both answers cost one token each, and no KV
  cache is shared or mutated (the original's bug, cannot happen: `elk_generalization/elk/extract_hiddens.py`
  reused a prompt's KV cache for both answers, which transformers >= 4.42 mutates in place).
* `duplicate`: two ordinary sequences per example, ``P + A`` and ``P + B``, with a plain 2D padding mask and the
  model's own logits.  It is the fallback for attention implementations that ignore custom 4D masks, and the
  reference that `packed` is checked against before an extraction starts.

Sequences are left-padded; position ids are explicit, so models with absolute position embeddings (GPT-2) see
the same positions as in an unpadded pass.  In `packed`, logits are computed from the final hidden states for
the few positions needed, not for the whole vocabulary at every position.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Strategy = Literal["packed", "duplicate"]
Loc = tuple[int, int]  # (row, column before left padding)


@dataclass
class BatchResult:
    hiddens: torch.Tensor  # [L, B, d] last prompt token
    pairs: torch.Tensor  # [L, B, 2, d] first appended token of choice 0 / choice 1
    lm_log_odds: torch.Tensor  # [B] logit(c1[0]) - logit(c0[0]) at the last prompt token
    lm_log_odds_full: torch.Tensor | None  # [B] sum log p(c1 tokens) - sum log p(c0 tokens)


@dataclass
class _Row:
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)  # -1: shared prefix, else the member's example index
    kind: list[int] = field(default_factory=list)  # 0 prompt, 1 choice 0, 2 choice 1


@dataclass
class _Where:
    """Where an example's outputs are read: its last prompt token, its answers' first tokens, and the
    locations whose logits predict each answer token (for multi-token log-odds)."""

    last: Loc
    first0: Loc
    first1: Loc
    pred0: list[Loc]
    pred1: list[Loc]


def _sliding_window(model: Any) -> int | None:
    window = getattr(model.config, "sliding_window", None)
    return int(window) if isinstance(window, int) and window > 0 else None


def packed_supported(model: Any, max_len: int) -> bool:
    """Whether custom 4D masks reach this model's attention unchanged (eager/sdpa) and no mixed sliding/global
    layer pattern would be flattened by one shared mask."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in ("eager", "sdpa"):
        return False
    if model.get_output_embeddings() is None:
        return False
    layer_types = getattr(model.config, "layer_types", None)
    window = _sliding_window(model)
    return not (layer_types and len(set(layer_types)) > 1 and window is not None and max_len > window)


def _lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_by_prefix(
    prompts: list[list[int]],
    indices: list[int],
    *,
    max_members: int = 8,
    min_shared: int = 2,
    min_fraction: float = 0.5,
    max_growth: float = 2.0,
) -> list[tuple[list[int], int]]:
    """Group examples whose prompts share a prefix: `[(members, shared_prefix_len), ...]`.

    Deterministic: sort by token sequence (ties by index), then add each example to the current group while
    - the shared prefix does not shrink (adding a member never loses savings), is at least `min_shared` tokens
      and at least `min_fraction` of the new member's prompt (a short shared prefix is not worth a long row),
    - the packed row stays within `max_growth` times its longest member's own sequence (attention cost grows with
      the square of the row length), and the group has fewer than `max_members` members.
    Every member keeps at least its own last prompt token.  Answers count as 2 tokens when sizing rows.
    """
    order = sorted(indices, key=lambda i: (prompts[i], i))
    groups: list[tuple[list[int], int]] = []
    members: list[int] = []
    shared = 0

    def row_len(ms: list[int], sh: int) -> int:
        return sh + sum(len(prompts[j]) - sh + 2 for j in ms)

    for i in order:
        if members:
            first = prompts[members[0]]
            s = min(_lcp(first, prompts[i]), len(prompts[i]) - 1, len(first) - 1)
            new_shared = s if len(members) == 1 else shared
            candidate = [*members, i]
            ok = (
                s >= max(min_shared, min_fraction * len(prompts[i]))
                and s >= new_shared
                and len(candidate) <= max_members
                and row_len(candidate, new_shared) <= max_growth * max(len(prompts[j]) + 2 for j in candidate)
            )
            if ok:
                members, shared = candidate, new_shared
                continue
            groups.append((members, shared if len(members) > 1 else 0))
        members, shared = [i], 0
    if members:
        groups.append((members, shared if len(members) > 1 else 0))
    return groups


def _packed_row(
    row: int,
    members: list[int],
    shared: int,
    prompts: list[list[int]],
    c0: list[list[int]],
    c1: list[list[int]],
) -> tuple[_Row, dict[int, _Where]]:
    r = _Row()
    prefix = prompts[members[0]][:shared]
    r.tokens += prefix
    r.positions += list(range(shared))
    r.owner += [-1] * shared
    r.kind += [0] * shared
    where: dict[int, _Where] = {}
    for j in members:
        p, a, b = prompts[j], c0[j], c1[j]
        suffix = p[shared:]
        r.tokens += suffix
        r.positions += list(range(shared, len(p)))
        r.owner += [j] * len(suffix)
        r.kind += [0] * len(suffix)
        last = len(r.tokens) - 1
        start0 = len(r.tokens)
        r.tokens += a
        r.positions += list(range(len(p), len(p) + len(a)))
        r.owner += [j] * len(a)
        r.kind += [1] * len(a)
        start1 = len(r.tokens)
        r.tokens += b
        r.positions += list(range(len(p), len(p) + len(b)))
        r.owner += [j] * len(b)
        r.kind += [2] * len(b)
        where[j] = _Where(
            last=(row, last),
            first0=(row, start0),
            first1=(row, start1),
            pred0=[(row, last)] + [(row, start0 + k) for k in range(len(a) - 1)],
            pred1=[(row, last)] + [(row, start1 + k) for k in range(len(b) - 1)],
        )
    return r, where


def _duplicate_rows(
    row: int, j: int, prompts: list[list[int]], c0: list[list[int]], c1: list[list[int]]
) -> tuple[list[_Row], _Where]:
    p, a, b = prompts[j], c0[j], c1[j]
    rows = []
    for kind, c in ((1, a), (2, b)):
        rows.append(
            _Row(
                tokens=p + c,
                positions=list(range(len(p) + len(c))),
                owner=[j] * (len(p) + len(c)),
                kind=[0] * len(p) + [kind] * len(c),
            )
        )
    n = len(p)
    where = _Where(
        last=(row, n - 1),
        first0=(row, n),
        first1=(row + 1, n),
        pred0=[(row, n - 1 + k) for k in range(len(a))],
        pred1=[(row + 1, n - 1 + k) for k in range(len(b))],
    )
    return rows, where


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
    groups: list[tuple[list[int], int]] | None = None,
) -> BatchResult:
    """Run one batch of examples; outputs are in the order of `prompts`.

    `choice0/1` are the appended ids (only the first is used unless `full_log_odds`).  For `packed`, `groups`
    (from `group_by_prefix`) says which examples share a sequence; by default they are grouped here.
    """
    if not full_log_odds:
        choice0 = [c[:1] for c in choice0]
        choice1 = [c[:1] for c in choice1]
    rows, where = _layout(prompts, choice0, choice1, strategy, groups)
    batch = _pad(rows, pad_id)
    device = model.device
    kwargs = _model_inputs(model, batch, where, strategy)
    out = model(input_ids=batch.ids.to(device), position_ids=batch.pos.to(device), **kwargs)

    layers = out.hidden_states[1:]
    ws = [where[j] for j in range(len(prompts))]
    hid = _states_at(layers, batch, [w.last for w in ws])
    pairs = torch.stack(
        [
            _states_at(layers, batch, [w.first0 for w in ws]),
            _states_at(layers, batch, [w.first1 for w in ws]),
        ],
        dim=2,
    )
    # Logits at every location that predicts an answer token, example by example: pred0 then pred1.
    pred_locs = [loc for w in ws for loc in w.pred0 + w.pred1]
    logits = _logits_at(model, out, layers, batch, pred_locs, strategy)
    lo, lo_full = _log_odds(logits, ws, choice0, choice1, full_log_odds)
    return BatchResult(hiddens=hid, pairs=pairs, lm_log_odds=lo, lm_log_odds_full=lo_full)


def _layout(
    prompts: list[list[int]],
    choice0: list[list[int]],
    choice1: list[list[int]],
    strategy: Strategy,
    groups: list[tuple[list[int], int]] | None,
) -> tuple[list[_Row], dict[int, _Where]]:
    """The batch's sequences (one per prefix group, or two per example) and where each example's outputs are."""
    n_ex = len(prompts)
    rows: list[_Row] = []
    where: dict[int, _Where] = {}
    if strategy == "packed":
        if groups is None:
            groups = group_by_prefix(prompts, list(range(n_ex)))
        for members, shared in groups:
            row, w = _packed_row(len(rows), members, shared, prompts, choice0, choice1)
            rows.append(row)
            where.update(w)
    else:
        for j in range(n_ex):
            rs, w = _duplicate_rows(len(rows), j, prompts, choice0, choice1)
            rows += rs
            where[j] = w
    if sorted(where) != list(range(n_ex)):
        raise ValueError("groups must cover every example of the batch exactly once")
    return rows, where


@dataclass
class _Padded:
    """The rows left-padded to one width: tokens, explicit positions, owners (-2 on padding) and kinds, and each
    row's padding width (`shift`), which turns a `Loc` into a tensor column."""

    ids: torch.Tensor
    pos: torch.Tensor
    owner: torch.Tensor
    kind: torch.Tensor
    shift: list[int]

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])

    @property
    def real(self) -> torch.Tensor:
        return self.owner > -2

    def locs(self, items: list[Loc]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([rw for rw, _ in items]), torch.tensor([c + self.shift[rw] for rw, c in items])


def _pad(rows: list[_Row], pad_id: int) -> _Padded:
    R, T = len(rows), max(len(r.tokens) for r in rows)
    ids = torch.full((R, T), pad_id, dtype=torch.long)
    pos = torch.zeros((R, T), dtype=torch.long)
    owner = torch.full((R, T), -2, dtype=torch.long)
    kind = torch.zeros((R, T), dtype=torch.long)
    shift = []
    for i, r in enumerate(rows):
        s = T - len(r.tokens)  # left padding
        shift.append(s)
        ids[i, s:] = torch.tensor(r.tokens)
        pos[i, s:] = torch.tensor(r.positions)
        owner[i, s:] = torch.tensor(r.owner)
        kind[i, s:] = torch.tensor(r.kind)
    return _Padded(ids, pos, owner, kind, shift)


def _model_inputs(model: Any, batch: _Padded, where: dict[int, _Where], strategy: Strategy) -> dict[str, Any]:
    """The forward's keyword arguments besides ids and positions: the attention mask, and `logits_to_keep` where
    the model takes it, so the vocabulary projection runs only where a logit is read (none in `packed`, which
    projects the gathered final states itself; the trailing columns that hold every answer in `duplicate`)."""
    kwargs: dict[str, Any] = {"output_hidden_states": True, "use_cache": False}
    if strategy == "packed":
        kwargs["attention_mask"] = _packed_mask(model, batch).to(model.device)
        if _accepts_logits_to_keep(model):
            kwargs["logits_to_keep"] = 1  # logits come from the gathered final states below
    else:
        kwargs["attention_mask"] = batch.real.long().to(model.device)
        if _accepts_logits_to_keep(model):
            kwargs["logits_to_keep"] = int(
                batch.width - min(c + batch.shift[rw] for w in where.values() for rw, c in w.pred0 + w.pred1)
            )
    return kwargs


def _packed_mask(model: Any, batch: _Padded) -> torch.Tensor:
    """The additive 4D mask [R, 1, T, T] of a packed batch: a token sees, causally, the shared prefix and its own
    member's prompt, and an answer token only its own answer besides (the module docstring's rule), within the
    model's sliding window if it has one."""
    T, owner, kind, pos, real = batch.width, batch.owner, batch.kind, batch.pos, batch.real
    ok, oq = owner[:, None, :], owner[:, :, None]  # key, query
    kk, kq = kind[:, None, :], kind[:, :, None]
    allowed = (ok == -1) | ((ok == oq) & ((kk == 0) | (kk == kq)))
    allowed &= torch.ones(T, T, dtype=torch.bool).tril() & real[:, None, :] & real[:, :, None]
    window = _sliding_window(model)
    if window is not None:
        allowed &= (pos[:, :, None] - pos[:, None, :]) < window
    allowed |= torch.eye(T, dtype=torch.bool)  # padding queries see themselves: no all-masked rows (NaN)
    dtype = model.dtype if model.dtype.is_floating_point else torch.float32
    mask = torch.zeros((batch.ids.shape[0], 1, T, T), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return mask


def _pick(h: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return h[r.to(h.device), c.to(h.device)]  # layers may live on different GPUs (device_map="auto")


def _states_at(layers: tuple[torch.Tensor, ...], batch: _Padded, items: list[Loc]) -> torch.Tensor:
    """Every layer's state at `items`, float32 on the CPU: [L, len(items), d]."""
    r, c = batch.locs(items)
    return torch.stack([_pick(h, r, c).float().cpu() for h in layers])


def _logits_at(
    model: Any,
    out: Any,
    layers: tuple[torch.Tensor, ...],
    batch: _Padded,
    items: list[Loc],
    strategy: Strategy,
) -> torch.Tensor:
    """Logits at `items`, float32 on the CPU: `packed` projects the final states there through the output
    embeddings; `duplicate` reads the model's own logits, whose columns may start late (`logits_to_keep`)."""
    r, c = batch.locs(items)
    if strategy == "packed":
        head = model.get_output_embeddings()
        return head(_pick(layers[-1], r, c).to(head.weight.device)).float().cpu()
    keep = out.logits.shape[1]
    return _pick(out.logits, r, c - (batch.width - keep)).float().cpu()


def _log_odds(
    logits: torch.Tensor,
    ws: list[_Where],
    choice0: list[list[int]],
    choice1: list[list[int]],
    full_log_odds: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """First-token log-odds per example and, with `full_log_odds`, the difference of the answers' summed token
    log-probabilities (float64 softmax); `logits` holds each example's pred0 rows then its pred1 rows."""
    n_ex = len(ws)
    lo = torch.empty(n_ex)
    lo_full = torch.empty(n_ex) if full_log_odds else None
    k = 0
    for j, w in enumerate(ws):
        n0, n1 = len(w.pred0), len(w.pred1)
        l0, l1 = logits[k : k + n0], logits[k + n0 : k + n0 + n1]
        k += n0 + n1
        a, b = choice0[j], choice1[j]
        # both answers' first tokens are predicted at the last prompt token (l0[0] and l1[0] are the same state)
        lo[j] = l0[0, b[0]] - l0[0, a[0]]
        if lo_full is not None:
            s0 = torch.log_softmax(l0.double(), -1)[torch.arange(n0), torch.tensor(a)].sum()
            s1 = torch.log_softmax(l1.double(), -1)[torch.arange(n1), torch.tensor(b)].sum()
            lo_full[j] = float(s1 - s0)
    return lo, lo_full
