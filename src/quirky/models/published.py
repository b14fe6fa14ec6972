"""The published quirky models by name, in either form: merged weights or a LoRA adapter on a base model.

Why: EleutherAI released the paper's quirky models (Mallen & Belrose, arXiv 2312.01037) under names built by
elk-generalization's `utils.get_quirky_model_name`: `<user>/<base>-<dataset>-<method>` plus `-standardized`
(standardized templates), `-weak-only` (finetuned on Bob only) and `-ft` (full finetuning instead of LoRA), e.g.
`EleutherAI/Mistral-7B-v0.1-capitals-first`.  LoRA runs were pushed as adapters (`adapter_config.json` naming
the base model, no `config.json`), full finetunes as ordinary model repositories.  `--model` must accept both
without the user knowing which form a repository holds, so an adapter repository is split here into (its base
model, the adapter directory), which `quirky.models.loading` already knows how to load and fingerprint.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from quirky.errors import QuirkyError
from quirky.fileio import read_json

ADAPTER_CONFIG = "adapter_config.json"
#: Files that mean "this directory holds full model weights" (then it is loaded as a model, not an adapter).
_FULL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: The original's templatization methods (`--method` of its sft.py) and what quirky calls those setups.
METHOD_SETUPS: dict[str, str] = {"first": "single", "random": "mixture"}
_DATASETS = (
    "capitals|hemisphere|population|sciq|sentiment|nli|authors|addition|subtraction|multiplication|"
    "modularaddition|squaring"
)
_NAME = re.compile(
    rf"^(?P<user>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<base>[A-Za-z0-9][A-Za-z0-9._-]*?)-(?P<dataset>{_DATASETS})"
    r"(?:-(?P<method>first|random))?(?P<standardized>-standardized)?(?P<weak_only>-weak-only)?(?P<ft>-ft)?$"
)


@dataclass(frozen=True)
class PublishedName:
    """What a published quirky model's name says about how it was made."""

    user: str
    base: str
    dataset: str
    method: str | None  # "first" / "random"; None for the earlier release's `<user>/<base>-<dataset>` names
    standardized: bool
    weak_only: bool
    full_finetune: bool

    @property
    def setup(self) -> str:
        """The templating setup the model was trained with, in quirky's names."""
        if self.standardized:
            return "standardized"
        return METHOD_SETUPS.get(self.method or "random", "mixture")

    @property
    def repo_id(self) -> str:
        suffix = f"-{self.method}" if self.method else ""
        suffix += (
            "-standardized" * self.standardized + "-weak-only" * self.weak_only + "-ft" * self.full_finetune
        )
        return f"{self.user}/{self.base}-{self.dataset}{suffix}"


def parse_published_name(name: str | os.PathLike[str]) -> PublishedName | None:
    """Parse `<user>/<base>-<dataset>[-<method>][-standardized][-weak-only][-ft]` (the last two parts of a path
    or a hub cache folder `models--<user>--<name>` count too); None when the string is not such a name."""
    text = str(name).rstrip("/")
    cache = re.search(r"models--([^/]+)--([^/]+)(?:/snapshots/[^/]+)?$", text)
    if cache:
        text = f"{cache.group(1)}/{cache.group(2)}"
    parts = text.split("/")
    if len(parts) < 2:
        return None
    m = _NAME.match("/".join(parts[-2:]))
    if m is None:
        return None
    return PublishedName(
        user=m["user"],
        base=m["base"],
        dataset=m["dataset"],
        method=m["method"],
        standardized=bool(m["standardized"]),
        weak_only=bool(m["weak_only"]),
        full_finetune=bool(m["ft"]),
    )


def is_adapter_dir(path: Path) -> bool:
    """A PEFT adapter directory: `adapter_config.json` and no full model weights beside it."""
    return (path / ADAPTER_CONFIG).is_file() and not any((path / f).is_file() for f in _FULL_WEIGHTS)


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or an unusable entry): the caller decides what that means
        return None


def _hub_adapter(repo_id: str) -> Path | None:
    """The local copy of hub repository `repo_id` if it is a LoRA adapter (cached, or fetched when online)."""
    snapshot = _cached_snapshot(repo_id)
    if snapshot is not None:
        return snapshot if is_adapter_dir(snapshot) else None
    from quirky.models.loading import _hub_reachable

    if not _hub_reachable():
        return None  # resolve_model then says the model is neither local, cached nor reachable
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        hf_hub_download(repo_id, ADAPTER_CONFIG)
    except Exception:  # no adapter_config.json (a full model), or an unknown repository: loading says which
        return None
    path = Path(snapshot_download(repo_id))  # an adapter is small: fetch all of it
    return path if is_adapter_dir(path) else None


def adapter_repository(name_or_path: str | os.PathLike[str]) -> Path | None:
    """The adapter directory that `name_or_path` names (a local directory or a hub repository), else None."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path if is_adapter_dir(path) else None
    if path.exists() or path.suffix == ".gguf" or str(name_or_path).count("/") != 1:
        return None
    return _hub_adapter(str(name_or_path))


def adapter_base(adapter: Path) -> str:
    """The base model an adapter was trained on (`base_model_name_or_path` in its `adapter_config.json`)."""
    try:
        config = read_json(adapter / ADAPTER_CONFIG)
    except ValueError as e:
        raise QuirkyError(
            f"{adapter / ADAPTER_CONFIG} is not valid JSON ({e}); the adapter is damaged."
        ) from e
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base:
        raise QuirkyError(
            f"the LoRA adapter {adapter} does not name its base model (no base_model_name_or_path in "
            f"{ADAPTER_CONFIG}); pass the base with --model BASE --adapter {adapter}."
        )
    return str(base)


def split_adapter_repository(
    name_or_path: str | os.PathLike[str], adapter: str | os.PathLike[str] | None = None
) -> tuple[str | os.PathLike[str], str | os.PathLike[str] | None]:
    """`(model, adapter)` to load: an adapter repository given as the model becomes (its base, itself).

    Anything else is returned unchanged, so a merged-weights repository loads as an ordinary model.  The base
    is whatever the adapter records (a hub id or a path); when that is not available here, loading says so,
    and `--model BASE --adapter DIR` names another copy of the base.
    """
    found = adapter_repository(name_or_path)
    if found is None:
        return name_or_path, adapter
    if adapter is not None:
        raise QuirkyError(
            f"model {str(name_or_path)!r} is itself a LoRA adapter (it has {ADAPTER_CONFIG}); pass it alone as "
            "--model, or pass its base model as --model and the adapter as --adapter, not both."
        )
    base = adapter_base(found)
    from quirky.models.loading import resolve_model

    try:
        resolve_model(base)
    except QuirkyError as e:
        raise QuirkyError(
            f"{str(name_or_path)!r} is a LoRA adapter for the base model {base!r}, which cannot be loaded here "
            f"({str(e).rstrip('.')}); pass a copy of the base with --model BASE --adapter {found}."
        ) from e
    return base, found
