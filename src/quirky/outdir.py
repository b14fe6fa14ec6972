"""The one output-directory rule every command follows, and the per-output write lock.

Why: an `--out` typo must never cost a user a file.  A command writes only into a directory that is new, empty,
or a previous output of the same command (recognised by the marker file this module writes, or by the command's
own signature file for outputs made before markers existed); anything else is refused with one line saying why
and what to do.  Replacing a previous output (with or without `--overwrite`) only ever touches what the command
itself wrote: a previous output that has gained unrelated files is refused too, as is an `--out` that is an input,
contains an input, or is (or contains) the working directory.

A second writer to the same output fails at once naming the holder (pid and host); the lock is an `flock` on a
hidden file beside the output, so a lock left by a killed process is simply taken over.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import fnmatch
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quirky.anomaly import output as anomaly_output
from quirky.errors import QuirkyError
from quirky.fileio import drop_temporaries, recover_swap, swap_in
from quirky.finetune import output as finetune_output
from quirky.interventions import output as intervention_output

MARKER = ".quirky-output.json"


@dataclass(frozen=True)
class Kind:
    """What one command writes: its name for messages, the file that identifies an older output of it (before
    markers), and glob patterns of the top-level entries it may have written (what it may replace)."""

    command: str
    noun: str
    signature: tuple[str, ...]
    owned: tuple[str, ...]


# Names a command's helpers leave while writing: atomic-file temporaries and crash-safe swap leftovers.
_TRANSIENT = (".*.tmp", ".*.old", MARKER)

#: The finished tables and summary of a probe output (removed before its run.json changes).
PROBE_TABLES = (
    "summary.json",
    "results.parquet",
    "results.csv",
    "random.parquet",
    "random.csv",
    "eil.csv",
    "pgr.csv",
)
_PROBE_FILES = ("run.json", "probes", "scores", "parts", *PROBE_TABLES)

KINDS: dict[str, Kind] = {
    "report": Kind(
        command="quirky report",
        noun="a report",
        signature=("report.html",),
        owned=("report.html", "report.md", "figures", "summary.json"),
    ),
    "anomaly": Kind(
        command="quirky anomaly",
        noun="an anomaly-detection output",
        signature=(anomaly_output.RESULT_JSON,),
        owned=(anomaly_output.RESULT_JSON, anomaly_output.SCORES),
    ),
    "intervene": Kind(
        command="quirky intervene",
        noun="an intervention output",
        signature=(intervention_output.RESULT_JSON,),
        owned=(intervention_output.RESULT_JSON, intervention_output.LOG_ODDS),
    ),
    "datasets": Kind(
        command="quirky datasets build",
        noun="a quirky dataset",
        signature=("dataset.json",),
        owned=("dataset.json", "train.parquet", "validation.parquet", "test.parquet"),
    ),
    "extract": Kind(
        command="quirky extract",
        noun="an activation store",
        signature=("store.json",),
        owned=("store.json", "manifest.parquet", "chunk-*.safetensors"),
    ),
    "finetune": Kind(
        command="quirky finetune",
        noun="a finetuning run",
        signature=finetune_output.SIGNATURE,
        owned=finetune_output.OWNED,
    ),
    "probe": Kind(command="quirky probe", noun="a probe output", signature=("run.json",), owned=_PROBE_FILES),
}


def _kind(command: str) -> Kind:
    try:
        return KINDS[command]
    except KeyError:
        raise ValueError(f"unknown output kind {command!r}; one of {sorted(KINDS)}") from None


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of a quirky output directory, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(path: Path, command: str) -> None:
    """Record in `path` that `command` wrote it, with the entries it holds now (what a later run may replace)."""
    _kind(command)
    entries = sorted(p.name for p in path.iterdir() if p.name != MARKER)
    (path / MARKER).write_text(json.dumps({"command": command, "entries": entries}, indent=2) + "\n")


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def check_output(
    out: str | os.PathLike[str],
    command: str,
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
) -> str:
    """Apply the output rule to `out` for `command`; return "new", "empty" or "previous", or raise QuirkyError.

    Nothing is created or changed, so a refused command leaves the disk exactly as it was.
    """
    kind = _kind(command)
    out = Path(out)
    real = _real(out)
    here = _real(os.getcwd())
    if _is_within(here, real):
        what = "the working directory" if real == here else "a parent of the working directory"
        raise QuirkyError(
            f"{option} {out} is {what}; {kind.command} replaces its output directory as a whole, so name a new "
            f"subdirectory instead (e.g. {option} {out / 'out'})"
        )
    for item in inputs:
        if item is None or not os.path.exists(item):
            continue
        src = _real(item)
        if _is_within(src, real):
            what = "an input" if src == real else f"a parent of the input {item}"
            raise QuirkyError(
                f"{option} {out} is {what} of this command; choose a separate {option} so no input is overwritten"
            )
    if not out.exists() and not out.is_symlink():
        return "new"
    if not out.is_dir():
        raise QuirkyError(f"{option} {out} exists and is not a directory; choose another {option}")
    try:
        names = [p.name for p in out.iterdir()]
    except OSError as e:
        raise QuirkyError(f"cannot read {option} {out} ({e.strerror}); choose another {option}") from None
    if not names:
        return "empty"
    marker = read_marker(out)
    if marker is not None:
        if marker.get("command") != command:
            theirs = KINDS.get(
                str(marker.get("command")), Kind(str(marker.get("command")), "", (), ())
            ).command
            raise QuirkyError(
                f"{option} {out} holds the output of `{theirs}`, not of `{kind.command}`; choose another {option}"
            )
        owned = set(marker.get("entries") or ())
    elif any((out / s).is_file() for s in kind.signature):
        owned = set()
    else:
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise QuirkyError(
            f"{option} {out} is not empty ({shown}) and is not {kind.noun} (an earlier output of "
            f"`{kind.command}`); "
            f"choose a new or empty {option} (nothing was changed)"
        )
    foreign = sorted(
        n
        for n in names
        if n not in owned and not any(fnmatch.fnmatch(n, p) for p in (*kind.owned, *_TRANSIENT))
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise QuirkyError(
            f"{option} {out} is an earlier output of `{kind.command}` but also holds files it did not write "
            f"({shown}); move them away or choose another {option} (nothing was changed)"
        )
    return "previous"


# ---------------------------------------------------------------------------------------------------- locks
@dataclass
class _Held:
    fd: int
    pid: int


_HELD: dict[Path, _Held] = {}


def lock_path(out: str | os.PathLike[str]) -> Path:
    """The lock file of output `out`: a hidden sibling, because the output directory itself is swapped."""
    real = _real(out)
    return real.parent / f".{real.name}.lock"


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    except (OSError, ValueError):
        return "another process"


def hold_output(out: str | os.PathLike[str], command: str = "") -> None:
    """Take the write lock of output `out`, or fail at once naming its holder.

    Re-entrant within one process.  A lock file left by a killed process holds no `flock`, so it is taken over.
    """
    key = _real(out)
    held = _HELD.get(key)
    if held is not None and held.pid == os.getpid():
        return
    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QuirkyError(f"cannot create {path.parent} ({e.strerror}); choose a writable --out") from None
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise QuirkyError(
                f"cannot write in {path.parent} ({e.strerror}); choose a writable --out or fix its permissions"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            who = f"`{KINDS[command].command}` " if command in KINDS else ""
            raise QuirkyError(
                f"{out} is being written by another {who}process ({_describe_holder(path)}; lock {path}); "
                "wait for it to finish or stop it"
            ) from None
        # the holder may have released and unlinked the file between our open and flock: retry on the new file
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(
            fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command}).encode()
        )
        _HELD[key] = _Held(fd, os.getpid())
        recover_swap(out)  # only under the lock: another writer may be between its two renames
        # what a killed writer left (atomic-write temporaries), also only under the lock; inside the output
        # only when it is marked as a quirky output (never in a user's folder)
        drop_temporaries(out, inside=read_marker(Path(out)) is not None)
        return
    raise QuirkyError(f"could not lock {path}: it keeps changing; is another process writing {out}?")


def release_output(out: str | os.PathLike[str]) -> None:
    """Drop this process's write lock of `out` (no-op if it holds none)."""
    key = _real(out)
    held = _HELD.pop(key, None)
    if held is None or held.pid != os.getpid():
        return
    with contextlib.suppress(FileNotFoundError):
        lock_path(out).unlink()
    os.close(held.fd)


def release_all() -> None:
    """Drop every write lock this process holds (the CLI calls this on exit, so a command that failed half-way
    leaves no lock file behind; a killed process leaves one that the next writer takes over)."""
    for key in list(_HELD):
        release_output(key)


atexit.register(release_all)


def claim_output(
    out: str | os.PathLike[str],
    command: str,
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
) -> str:
    """`check_output`, then take the write lock (and check again under it); returns the state of `out`."""
    inputs = list(inputs)
    check_output(out, command, inputs=inputs, option=option)
    hold_output(out, command)
    try:
        return check_output(out, command, inputs=inputs, option=option)
    except BaseException:
        release_output(out)
        raise


@contextlib.contextmanager
def replace_output(
    out: str | os.PathLike[str],
    command: str,
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
) -> Iterator[Path]:
    """Yield a fresh directory beside `out`; when the block succeeds it becomes `out` (with the marker), swapped in
    crash-safely, and the lock is released.  On failure `out` is untouched."""
    out = Path(out)
    claim_output(out, command, inputs=inputs, option=option)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            yield tmp
            write_marker(tmp, command)
            os.chmod(tmp, 0o777 & ~_umask())
            swap_in(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        release_output(out)


def scratch_path(out: str | os.PathLike[str]) -> Path:
    """Where a resumable command keeps the pieces of an unfinished output `out`: a hidden sibling, so `out` itself
    only ever holds a finished output (extraction's chunks, interventions' log-odds chunks)."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def discard_scratch(scratch: Path, state_file: str) -> None:
    """Remove a scratch directory that a command wrote: one holding its `state_file` (written first, right after
    the directory is made), or an empty one (a run killed between the two).  Anything else at that path is not
    ours, and is refused in one line instead of deleted."""
    if not scratch.exists() and not scratch.is_symlink():
        return
    ours = scratch.is_dir() and not scratch.is_symlink()
    if ours and ((scratch / state_file).is_file() or not any(scratch.iterdir())):
        shutil.rmtree(scratch)
        return
    raise QuirkyError(
        f"{scratch} is in the way of this command's scratch directory and was not written by quirky (no "
        f"{state_file}); move it away and rerun (nothing was changed)"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = [
    "KINDS",
    "MARKER",
    "PROBE_TABLES",
    "check_output",
    "claim_output",
    "discard_scratch",
    "hold_output",
    "lock_path",
    "read_marker",
    "release_all",
    "release_output",
    "replace_output",
    "scratch_path",
    "write_marker",
]
