"""Difficulty of a two-choice question as the mean cross-entropy of a panel of (weak) language models.

The original (`elk_generalization/datasets/quirky_dataset.py:197-247`) defines, for sentiment, nli and sciq,
difficulty = mean over models of −log σ(s·ℓ), where ℓ = log p(positive choice | prompt) −
log p(negative choice | prompt) under the model and s = +1 if the label is True, else −1: how surprised the panel
is by the truth.  Intuition: a question is hard when cheap models get it wrong.

Why this is re-implemented rather than copied (the original's bugs, `quirky_dataset.py:102-122, 170-184`): (a)
every token of a multi-token choice is scored by a single forward over `prompt + choice`, summing
log-*probabilities* (log-softmax), not raw logits on a duplicated context; (b) results are returned positionally
in the order of the inputs, never via a DataFrame index; (c) choices are tokenised as the continuation of the
prompt without special tokens (no BOS inside a choice).  Forwards are batched and left-padded with explicit
position ids, so a batch gives the same numbers as one example at a time.

How a dataset picks its difficulty (`req.options`):
  - `difficulty`: `auto` (default: a `difficulty` column in the source if present, else the LM panel if
    `difficulty_models` is given, else the dataset's documented cheap proxy), `column`, `lm` or `proxy`;
  - `difficulty_models`: comma-separated model names/paths (from Python also a list of names, paths or
    (model, tokenizer) pairs), resolved through `quirky.models.load_model` when that module exists, else as local
    transformers directories;
  - `difficulty_batch_size` (8), `difficulty_shots` (5; few-shot demonstrations for sentiment/nli),
    `difficulty_max_length` (0 = the model's `max_position_embeddings`; longer prompts lose their start).
"""

from __future__ import annotations

import gc
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quirky.errors import QuirkyError

ModelSpec = Any  # a (model, tokenizer) pair, or a str / os.PathLike naming a model

DIFFICULTY_MODES = ("auto", "column", "lm", "proxy")

#: The build options of the LM-difficulty datasets, with defaults (declared in their `DatasetSpec.options`).
#: `difficulty_models` is a comma-separated list on the command line; from Python it may also be a list of names,
#: paths or (model, tokenizer) pairs.  `difficulty_max_length` 0 = the model's `max_position_embeddings`.
DIFFICULTY_OPTIONS: dict[str, object] = {
    "difficulty": "auto",
    "difficulty_models": "",
    "difficulty_batch_size": 8,
    "difficulty_shots": 5,
    "difficulty_max_length": 0,
}


def _model_list(raw: object) -> tuple[ModelSpec, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(raw, os.PathLike):
        return (raw,)
    if isinstance(raw, tuple) and len(raw) == 2 and not isinstance(raw[0], str | os.PathLike | tuple):
        return (raw,)  # one (model, tokenizer) pair
    if isinstance(raw, list | tuple):
        return tuple(raw)
    return (raw,)


@dataclass(frozen=True)
class DifficultySettings:
    """The difficulty choice read from `BuildRequest.options` (validated, so a typo fails before any work)."""

    mode: str = "auto"
    models: tuple[ModelSpec, ...] = ()
    batch_size: int = 8
    shots: int = 5
    max_length: int | None = None

    @staticmethod
    def from_options(options: Mapping[str, object], dataset: str) -> DifficultySettings:
        mode = str(options.get("difficulty", "auto"))
        if mode not in DIFFICULTY_MODES:
            raise QuirkyError(
                f"{dataset}: option difficulty={mode!r} is not one of {', '.join(DIFFICULTY_MODES)}"
            )

        def _int(key: str, default: int, minimum: int) -> int:
            value = options.get(key, default)
            if value is None:
                value = default
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise QuirkyError(f"{dataset}: option {key}={value!r} must be an integer >= {minimum}")
            return value

        max_length = _int("difficulty_max_length", 0, 0)
        settings = DifficultySettings(
            mode=mode,
            models=_model_list(options.get("difficulty_models")),
            batch_size=_int("difficulty_batch_size", 8, 1),
            shots=_int("difficulty_shots", 5, 0),
            max_length=max_length or None,
        )
        if mode == "lm" and not settings.models:
            raise QuirkyError(
                f"{dataset}: option difficulty=lm needs difficulty_models (comma-separated local model paths or names)"
            )
        return settings

    def resolve(self, has_column: bool, dataset: str) -> str:
        """The mode actually used: `column`, `lm` or `proxy`."""
        if self.mode == "column" and not has_column:
            raise QuirkyError(
                f"{dataset}: option difficulty=column but the source has no `difficulty` column; add one or use "
                "difficulty=lm (with difficulty_models) or difficulty=proxy"
            )
        if self.mode != "auto":
            return self.mode
        if has_column:
            return "column"
        return "lm" if self.models else "proxy"


# ---------------------------------------------------------------------------------------------------------------
# tokenisation of (prompt, choice)


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids with the BOS token the tokenizer would add (if any), but never a trailing EOS."""
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        with_special = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if len(with_special) > 0 and with_special[0] == bos and (not ids or ids[0] != bos):
            ids = [bos, *ids]
    return ids


def encode_choice(tokenizer: Any, prompt: str, choice: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) for scoring `choice` after `prompt`.

    The continuation is the tail of the joint encoding of `prompt + choice` when the prompt's own encoding is a prefix
    of it (this keeps SentencePiece-style leading-space handling right); otherwise the choice is encoded on its own.
    The continuation never holds special tokens.
    """
    context = _prompt_ids(tokenizer, prompt)
    bos_offset = 1 if context and context[0] == getattr(tokenizer, "bos_token_id", None) else 0
    bare = context[bos_offset:]
    joint = list(tokenizer(prompt + choice, add_special_tokens=False)["input_ids"])
    if joint[: len(bare)] == bare and len(joint) > len(bare):
        continuation = joint[len(bare) :]
    else:
        continuation = list(tokenizer(choice, add_special_tokens=False)["input_ids"])
    if not continuation:
        raise QuirkyError(f"choice {choice!r} encodes to no tokens; difficulty cannot score it")
    return context, continuation


# ---------------------------------------------------------------------------------------------------------------
# scoring


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def choice_log_probs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> np.ndarray:
    """Sum of log p(choice tokens | prompt) for every prompt and choice: float64 array [n, n_choices].

    The input for a choice is `context + continuation[:-1]`; its last len(continuation) positions predict the
    continuation.  Identical inputs are run once (single-token choices of one prompt share one forward).
    """
    import torch

    if len(prompts) != len(choices):
        raise ValueError(f"{len(prompts)} prompts but {len(choices)} choice lists")
    if max_length is None:
        max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    seq_index: dict[tuple[int, ...], int] = {}
    seqs: list[tuple[int, ...]] = []
    # per unique sequence: the (prompt, choice, target tokens) scored from its trailing positions
    consumers: list[list[tuple[int, int, tuple[int, ...]]]] = []
    n_choices = max((len(c) for c in choices), default=0)
    for n, (prompt, options) in enumerate(zip(prompts, choices, strict=True)):
        for j, choice in enumerate(options):
            context, continuation = encode_choice(tokenizer, prompt, choice)
            seq = tuple(context + continuation[:-1])
            if max_length is not None and len(seq) > max_length:
                seq = seq[len(seq) - max_length :]  # keep the end: the question and the choice
            if seq not in seq_index:
                seq_index[seq] = len(seqs)
                seqs.append(seq)
                consumers.append([])
            consumers[seq_index[seq]].append((n, j, tuple(continuation)))

    # how many trailing positions each unique sequence must deliver
    need = [max(len(t) for _, _, t in c) for c in consumers]
    device = next(model.parameters()).device
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(tokenizer, "eos_token_id", None) or 0
    keep_logits = _accepts(model, "logits_to_keep")
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))  # longest first: any OOM comes early
    out = np.full((len(prompts), n_choices), np.nan, dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                width = max(len(seqs[i]) for i in batch)
                keep = max(need[i] for i in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    ids[r, width - len(seqs[i]) :] = torch.tensor(seqs[i], dtype=torch.long)
                    mask[r, width - len(seqs[i]) :] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                kwargs: dict[str, Any] = {
                    "input_ids": ids.to(device),
                    "attention_mask": mask.to(device),
                    "position_ids": positions.to(device),
                }
                if keep_logits:
                    kwargs["logits_to_keep"] = keep
                logits = model(**kwargs).logits[:, -keep:, :]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                for r, i in enumerate(batch):
                    for n, j, targets in consumers[i]:
                        m = len(targets)
                        tail = logprobs[r, keep - m :, :]
                        index = torch.tensor(targets, device=tail.device).unsqueeze(1)
                        out[n, j] = float(tail.gather(1, index).double().sum())
    finally:
        model.train(was_training)
    return out


def choice_log_odds(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    choices: Sequence[tuple[str, str]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> np.ndarray:
    """ℓ = log p(choices[1]) − log p(choices[0]) for each prompt (float64 [n])."""
    lp = choice_log_probs(model, tokenizer, prompts, choices, batch_size=batch_size, max_length=max_length)
    if lp.shape[1] != 2:
        raise ValueError("choice_log_odds needs exactly two choices per prompt")
    return lp[:, 1] - lp[:, 0]


def cross_entropy_from_log_odds(log_odds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """−log σ(s·ℓ) with s = +1 for True labels, −1 for False (elementwise, numerically stable)."""
    signs = np.where(np.asarray(labels, dtype=bool), 1.0, -1.0)
    return np.logaddexp(0.0, -signs * np.asarray(log_odds, dtype=np.float64))


def model_and_tokenizer(spec: ModelSpec) -> tuple[Any, Any]:
    """A (model, tokenizer) pair from a pair, or from a model name/path.

    Names go through `quirky.models.load_model` when that module exists (it knows hub ids, GGUF files and the
    embedded SmolLM2); otherwise only a local transformers directory can be loaded.  Nothing is downloaded here.
    """
    if isinstance(spec, tuple) and len(spec) == 2:
        return spec
    if not isinstance(spec, str | os.PathLike):
        raise QuirkyError(
            f"difficulty model {spec!r} is neither a (model, tokenizer) pair nor a model path/name"
        )
    try:
        from quirky.models import load_model  # type: ignore[attr-defined]
    except ImportError:
        load_model = None
    if load_model is not None:
        loaded = load_model(str(spec))
        if isinstance(loaded, tuple) and len(loaded) >= 2:
            return loaded[0], loaded[1]
        if hasattr(loaded, "model") and hasattr(loaded, "tokenizer"):
            return loaded.model, loaded.tokenizer
        raise QuirkyError(f"quirky.models.load_model({str(spec)!r}) returned no (model, tokenizer)")
    path = Path(spec)
    if not path.is_dir():
        raise QuirkyError(
            f"difficulty model {str(spec)!r} is not a local model directory (config.json + weights); "
            "give a path to a saved transformers causal LM"
        )
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise QuirkyError(f"cannot load difficulty model from {path}: {first}") from e
    return model, tokenizer


def lm_difficulty(
    prompts: Sequence[str],
    choices: Sequence[tuple[str, str]],
    labels: Sequence[bool] | np.ndarray,
    models: Sequence[ModelSpec],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Mean over `models` of −log σ(s·ℓ): the reference's LM difficulty (float64 [n]).

    Models named by path are loaded one at a time and released before the next, so a panel of several models
    needs the memory of one.
    """
    if not models:
        raise QuirkyError("lm_difficulty needs at least one model")
    labels_arr = np.asarray(labels, dtype=bool)
    if len(labels_arr) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(labels_arr)} labels")
    total = np.zeros(len(prompts), dtype=np.float64)
    for k, spec in enumerate(models):
        if progress is not None:
            progress(
                f"difficulty model {k + 1}/{len(models)}: {spec if not isinstance(spec, tuple) else 'given'}"
            )
        owned = not isinstance(spec, tuple)
        model, tokenizer = model_and_tokenizer(spec)
        try:
            lo = choice_log_odds(
                model, tokenizer, prompts, choices, batch_size=batch_size, max_length=max_length
            )
        finally:
            if owned:
                del model, tokenizer
                gc.collect()
        total += cross_entropy_from_log_odds(lo, labels_arr)
    return total / len(models)


# ---------------------------------------------------------------------------------------------------------------
# few-shot prompts (sentiment, nli)


def few_shot_prompts(
    rng: np.random.Generator,
    targets: Sequence[str],
    pool: Sequence[tuple[str, bool]],
    answers: tuple[str, str],
    shots: int,
) -> list[str]:
    """Prefix each target prompt with `shots` demonstrations drawn from `pool` ((prompt, label) pairs).

    As in the reference, the classes are as balanced as possible (for 5 shots: 2 of one class and 3 of the other,
    the class that gets more drawn at random per prompt) and the demonstrations are shuffled; each demonstration is
    its prompt followed by its answer (`answers[label]`), separated by blank lines.
    """
    if shots == 0 or not pool:
        return list(targets)
    by_class = {
        False: [p for p, lab in pool if not lab],
        True: [p for p, lab in pool if lab],
    }
    out: list[str] = []
    for target in targets:
        more_true = bool(rng.integers(2))
        n_true = (shots + 1) // 2 if more_true else shots // 2
        counts = {True: min(n_true, len(by_class[True])), False: min(shots - n_true, len(by_class[False]))}
        demos: list[str] = []
        for cls in (False, True):
            chosen = rng.choice(len(by_class[cls]), size=counts[cls], replace=False) if counts[cls] else []
            demos.extend(by_class[cls][int(i)] + answers[int(cls)] for i in chosen)
        order = rng.permutation(len(demos))
        out.append("\n\n".join([*(demos[int(i)] for i in order), target]))
    return out


def panel_difficulty(
    settings: DifficultySettings,
    prompts: Sequence[str],
    choices: Sequence[tuple[str, str]],
    labels: Sequence[bool] | np.ndarray,
) -> np.ndarray:
    """`lm_difficulty` with the models, batch size and length limit of `settings`."""
    return lm_difficulty(
        prompts,
        choices,
        labels,
        settings.models,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
    )


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """log(p / (1 − p)) with p clipped to [eps, 1 − eps], for turning a weak heuristic's score into log-odds."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(q) - np.log1p(-q)
