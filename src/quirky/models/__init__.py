"""Model loading (hub id, local directory, GGUF file, built-in `smollm2`, optional PEFT adapter) and answer-choice
token ids.  transformers is imported lazily inside the functions, so importing this package is cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quirky._lazy import lazy_exports

_EXPORTS = {
    "quirky.models.loading": (
        "BUILTIN_MODELS",
        "ModelSource",
        "build_gguf_cache",
        "load_model",
        "model_identity",
        "quirky_cache_dir",
        "resolve_model",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from quirky.models.loading import (
        BUILTIN_MODELS,
        ModelSource,
        build_gguf_cache,
        load_model,
        model_identity,
        quirky_cache_dir,
        resolve_model,
    )

__all__ = [
    "BUILTIN_MODELS",
    "ModelSource",
    "build_gguf_cache",
    "load_model",
    "model_identity",
    "quirky_cache_dir",
    "resolve_model",
]
