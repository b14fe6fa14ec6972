"""Householder reflection of the last-position residual state across a probe direction, via a forward hook.

The intervention asks: if we flip what the probe reads at layer ℓ, does the model's answer flip too?  At the
last prompt position only, the state h is reflected through the hyperplane that passes through the probe's
training mean μ and is orthogonal to the unit probe direction u:

    h' = h − 2((h − μ)·u) u

so the component along u changes sign around μ and everything orthogonal to u is kept.  The original hook
(`elk_generalization/interventions/intervene.py:169`) indexed the *batch* dimension and overwrote every position
with the reflected vector; here only the last position changes, which the tests check against a clean run.

Where the hook sits.  Layer ℓ means the state the activation store calls layer ℓ: `hidden_states[ℓ + 1]` of a
transformers model, i.e. the output of decoder block ℓ for ℓ < L − 1.  For the last layer, transformers records
the state *after* the final norm, so the probe for layer L − 1 was trained on post-norm states; by default the
hook is therefore placed on the final norm's output for ℓ = L − 1 (`last_layer="post-norm"`), reflecting in the
space the probe was fitted in.  `last_layer="pre-norm"` hooks the last decoder block instead, as the reference
did (its probe and its hook then disagree about the space).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from quirky.errors import QuirkyError

LastLayerSite = Literal["post-norm", "pre-norm"]

#: attribute names of the final norm on the module that holds the decoder layer list
_FINAL_NORM_NAMES = ("norm", "final_layer_norm", "ln_f", "final_norm", "norm_f", "final_layernorm")


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def num_layers(model: nn.Module) -> int:
    """Number of decoder layers, from the model's (text) config."""
    config = _unwrap(model).config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text_config, "num_hidden_layers", None)
    if not isinstance(n, int):
        raise QuirkyError(
            f"cannot tell how many decoder layers {type(model).__name__} has (no num_hidden_layers)"
        )
    return n


def _find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    n = num_layers(model)
    for name, module in _unwrap(model).named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return name, module
    raise QuirkyError(
        f"cannot find the decoder layer list of {type(model).__name__}: no nn.ModuleList of length {n}; "
        "interventions support decoder-only transformers models (Llama, Mistral, GPT-NeoX, GPT-2, ...)"
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder block list, found generically (`model.layers`, `gpt_neox.layers`, `transformer.h`, ... and
    the same inside PEFT wrappers): the first `nn.ModuleList` whose length is the configured layer count."""
    return _find_layer_list(model)[1]


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied after the last decoder block (a sibling of the decoder layer list)."""
    name, _ = _find_layer_list(model)
    parent = _unwrap(model).get_submodule(name.rsplit(".", 1)[0]) if "." in name else _unwrap(model)
    for attr in _FINAL_NORM_NAMES:
        module = getattr(parent, attr, None)
        if isinstance(module, nn.Module):
            return module
    raise QuirkyError(
        f"cannot find the final norm of {type(model).__name__} next to `{name}`; "
        "use last_layer='pre-norm' to hook the last decoder block instead"
    )


def hook_site(model: nn.Module, layer: int, last_layer: LastLayerSite = "post-norm") -> nn.Module:
    """The module whose output is the store's layer `layer` (see the module docstring)."""
    n = num_layers(model)
    if not -n <= layer < n:
        raise QuirkyError(f"layer {layer} is out of range: the model has {n} layers (0..{n - 1})")
    layer %= n
    if layer == n - 1 and last_layer == "post-norm":
        return final_norm(model)
    return decoder_layers(model)[layer]


def householder(h: torch.Tensor, direction: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """h − 2((h − μ)·u)u with u = direction/‖direction‖, computed in float32 and cast back to h's dtype."""
    u = direction.to(device=h.device, dtype=torch.float32)
    norm = torch.linalg.vector_norm(u)
    if not torch.isfinite(norm) or norm == 0:
        raise QuirkyError("the probe direction is zero or not finite; it cannot define a reflection")
    u = u / norm
    mu = mean.to(device=h.device, dtype=torch.float32)
    x = h.to(torch.float32)
    coef = (x - mu) @ u
    return (x - 2.0 * coef.unsqueeze(-1) * u).to(h.dtype)


@contextlib.contextmanager
def reflect_last_position(
    model: nn.Module,
    layer: int,
    direction: torch.Tensor,
    mean: torch.Tensor,
    *,
    last_layer: LastLayerSite = "post-norm",
) -> Iterator[None]:
    """While active, every forward pass reflects the state at the *last sequence position* of layer `layer`.

    The last position is index −1, which is the last prompt token of every row when prompts are left-padded
    (as the intervention experiment does).  Only that position changes; all earlier positions of the layer
    output are returned untouched.  Works for blocks that return a tensor or a tuple whose first item is the
    hidden state, and for PEFT-wrapped models.
    """
    d = direction.shape[-1]
    if direction.ndim != 1 or mean.shape != (d,):
        raise QuirkyError(
            f"direction and mean must be 1-d vectors of equal size, got {direction.shape} and {mean.shape}"
        )
    site = hook_site(model, layer, last_layer)

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[-1] != d:
            raise QuirkyError(
                f"probe direction has size {d} but layer {layer} has hidden size {hidden.shape[-1]}"
            )
        new = hidden.clone()
        new[:, -1] = householder(hidden[:, -1], direction, mean)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    # prepend: run before any hook transformers installed (its `output_hidden_states` recorder), so recorded
    # hidden states show the intervened state, as every later layer sees it.
    handle = site.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()
