"""Atomic writes and content fingerprints shared by every stage.

Why: long jobs must never leave a half-written file that a later run mistakes for a finished one, and every
cached artefact is keyed by a fingerprint of exactly the inputs and settings that determine it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quirky.errors import QuirkyError


class BadFileError(QuirkyError, ValueError):
    """A damaged input file (invalid JSON, truncated parquet): a user-fixable error that also stays a ValueError,
    so callers that already treat unreadable JSON as "no such record" keep doing so."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; results are ordinary files, so apply the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _normal_mode(tmp_path, directory=False)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _normal_mode(tmp, directory=True)
        swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _asides(path: Path) -> list[Path]:
    """Old versions of `path` renamed aside by `swap_in` (newest last)."""
    # exact pattern: a sibling named e.g. "out.x" has asides ".out.x.swap-*.old" that must never match "out"
    pattern = re.compile(re.escape(f".{path.name}.swap-") + r"[a-z0-9_]+\.old")
    found = [
        p for p in path.parent.glob(f".{glob.escape(path.name)}.swap-*.old") if pattern.fullmatch(p.name)
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def swap_in(new: Path, path: Path) -> None:
    """Make `new` (a finished file or directory beside `path`) become `path`, crash-safely.

    Why: deleting the old version before renaming the new one in loses both if anything fails in between.  Here
    the old version is renamed aside, the new one renamed in, and only then is the old one deleted; a crash at
    any point leaves one complete version, which `recover_swap` puts back in place if `path` is missing.
    """
    old = None
    if path.exists() or path.is_symlink():
        # a unique free name: reserve it with mkdtemp, then free it for the rename
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.swap-", suffix=".old", dir=path.parent))
        os.rmdir(old)
        os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        if old is not None and not path.exists():
            os.rename(old, path)
        raise
    if old is not None:
        _remove(old)


def recover_swap(path: str | os.PathLike[str]) -> None:
    """Finish a swap that a crash interrupted: restore the aside copy if `path` is missing, else drop leftovers."""
    path = Path(path)
    asides = _asides(path)
    if not asides:
        return
    if not path.exists() and not path.is_symlink():
        os.rename(asides.pop(), path)
    for old in asides:
        _remove(old)


#: The name `atomic_path`/`atomic_dir` give a temporary: ".<name>.<8 random characters from tempfile>.tmp".
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def drop_temporaries(path: str | os.PathLike[str], *, inside: bool) -> list[Path]:
    """Remove what a killed writer of `path` left: its own temporaries beside it and, with `inside`, the
    temporaries of atomic writes anywhere inside it.  Returns what was removed.

    Why: a `kill -9` skips the clean-up of `atomic_path`/`atomic_dir`, so a resumed run would otherwise keep a
    stray `.run.json.x1y2z3ab.tmp` in an output that an uninterrupted run does not have.  Call it only while
    holding the output's write lock (nobody else can be writing those temporaries then)."""
    path = Path(path)
    beside = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    found = [p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp") if beside.fullmatch(p.name)]
    if inside and path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            stale = [n for n in dirs if _TEMPORARY.fullmatch(n)]
            dirs[:] = [n for n in dirs if n not in stale]  # never descend into what is removed anyway
            found += [Path(root) / n for n in stale + [f for f in files if _TEMPORARY.fullmatch(f)]]
    for p in found:
        _remove(p)
    return found


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically with sorted keys, so equal objects give byte-identical files.

    An existing file with the same bytes is left untouched, so a cached re-run changes no modification times."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` atomically, unless `path` already holds exactly these bytes."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """Save torch tensors as a safetensors file, atomically, with the header's metadata in sorted key order.

    Why: safetensors writes its metadata map in hash order, different for every save (20 saves of one probe in one
    process gave 17 different files), so identical runs wrote different bytes.  The header is re-serialised with
    the same compact separators and the metadata keys sorted: the same characters in another order, so its length
    and every tensor offset stay as safetensors wrote them.  Equal inputs now give equal files, and a rerun leaves
    an identical file untouched (`write_bytes`).  For small files (probes, scores): the file is built in memory."""
    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if header.get("__metadata__"):
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= n:  # always (a permutation); else keep safetensors' own bytes
            data = data[:8] + text.ljust(n, b" ") + data[8 + n :]
    write_bytes(path, data)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; a damaged one (truncated, hand-edited, not text) is a one-line `BadFileError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadFileError(
            f"{path} is not valid JSON ({e}); it is damaged or was edited by hand: restore it or rerun the "
            "command that wrote it"
        ) from None


def read_parquet(path: str | os.PathLike[str], columns: list[str] | None = None) -> Any:
    """Read a parquet file into pandas; a truncated or foreign file is a one-line `BadFileError` naming it, and
    so is a file that lacks one of `columns` (all columns are read either way)."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise BadFileError(
            f"{path} is not a readable parquet file ({str(e).splitlines()[0][:200]}); it is damaged or "
            "truncated: rerun the command that wrote it"
        ) from None
    missing = [c for c in columns or () if c not in df.columns]
    if missing:
        raise BadFileError(
            f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; it was not written by "
            "this version of quirky or was edited: rerun the command that wrote it"
        )
    return df


def safetensors_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` is not a complete safetensors file (missing, truncated, foreign), or None if its header and
    size agree.  Reads the header only, so checking every chunk of a store before trusting it stays cheap."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"only {size} bytes, shorter than a safetensors header"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return "truncated inside its header"
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError):
        return "not a safetensors file (unreadable header)"
    if 8 + n + end != size:
        return f"{size} bytes where its header describes {8 + n + end}: truncated or overwritten"
    return None


def safetensors_digest(path: str | os.PathLike[str], length: int = 16) -> str:
    """sha256 of a safetensors file's content with its header's keys sorted.

    Why not `file_digest`: safetensors writes its metadata from a hash map, so two identical saves can differ in
    header byte order, and anything fingerprinted by those bytes (anomaly.json) would differ between identical
    runs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise BadFileError(f"{path} is not a safetensors file (unreadable header)") from None
        h.update(json.dumps(header, sort_keys=True).encode())
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def fingerprint(obj: Any, length: int = 16) -> str:
    """A short, stable hash of a JSON-serialisable object (dict key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_digest(path: str | os.PathLike[str], length: int = 16) -> str:
    """sha256 of a file's bytes (streamed), for fingerprinting inputs such as parquet splits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
