"""Model loading (hub id, local directory, GGUF file, built-in `smollm2`, optional PEFT adapter) and answer-choice
token ids.  transformers is imported lazily inside the functions, so importing this package is cheap."""

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
