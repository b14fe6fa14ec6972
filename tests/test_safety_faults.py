"""Fault injection (issue 12): a full disk in the middle of `quirky datasets build` and `quirky probe`, and both
commands killed at many points and resumed.

Why in-process: a kill is simulated at the k-th rename (`os.replace`/`os.rename`: every atomic file, every
directory swap) by copying the working directory as it is at that instant, stopping the command, and putting the
copy back, so the resumed run sees exactly what a `kill -9` would have left (temporaries, swap leftovers, a lock
file nobody holds) without paying a subprocess start per point.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_experiments import make_split

from quirky import fileio, outdir
from quirky.cli import main
from quirky.experiments import transfer

DS_A = ["--n-train", "40", "--n-val", "20", "--n-test", "20"]
DS_B = ["--n-train", "60", "--n-val", "20", "--n-test", "24"]
PROBE_ARGS = [
    "--methods",
    "mean-diff,random",
    "--experiments",
    "A->A,B",
    "--n-boot",
    "5",
    "--random-directions",
    "20",
    "--device",
    "cpu",
    "--quiet",
]


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of `quirky ARGV`, in-process."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    _, err = capsys.readouterr()
    return int(exc.value.code or 0), err


def digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (hidden ones included).

    A safetensors file is compared by `fileio.safetensors_digest` (its header's keys sorted): safetensors writes
    the header from a hash map, so even two uninterrupted runs differ in that order (documented there)."""

    def digest(p: Path) -> str:
        if p.suffix == ".safetensors":
            return "safetensors:" + fileio.safetensors_digest(p, length=64)
        return hashlib.sha256(p.read_bytes()).hexdigest()

    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def outside(root: Path, out: Path) -> dict[str, tuple[str, int]]:
    """Digest and mtime of every file under `root` that is not the output, its lock or its temporaries."""
    skip = (out.name, f".{out.name}.")
    return {
        k: (v, (root / k).stat().st_mtime_ns)
        for k, v in digests(root).items()
        if not (Path(k).parts[0] == out.name or Path(k).parts[0].startswith(skip))
    }


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code != 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


def leftovers(out: Path) -> list[str]:
    """Temporaries or swap leftovers of `out`, beside it or inside it."""
    beside = [p.name for p in out.parent.glob(f".{out.name}.*") if not p.name.endswith(".lock")]
    inside = [str(p) for p in out.rglob(".*") if p.name.endswith((".tmp", ".old"))] if out.exists() else []
    return beside + inside


# ------------------------------------------------------------------------------------------------ a full disk
def _full_disk(fail_at: int, calls: list[str]) -> Callable[..., contextlib.AbstractContextManager[Path]]:
    """An `atomic_path` whose `fail_at`-th use writes half its file and then fails with ENOSPC."""
    real = fileio.atomic_path

    @contextlib.contextmanager
    def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
        calls.append(str(path))
        with real(path) as tmp:
            yield tmp
            if len(calls) == fail_at:
                data = tmp.read_bytes() if tmp.exists() else b""
                tmp.write_bytes(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    return atomic_path


def _patch_writes(monkeypatch: pytest.MonkeyPatch, fake: Callable[..., object]) -> None:
    from quirky.datasets import layout

    for module in (fileio, transfer, layout):
        monkeypatch.setattr(module, "atomic_path", fake)


@pytest.mark.parametrize("fail_at", [1, 2, 4])
def test_a_full_disk_while_building_a_dataset_keeps_the_previous_one(
    tmp_path, monkeypatch, capsys, fail_at
) -> None:
    """fail_at 1, 2: a split's parquet; 4: dataset.json (the splits were written first)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    out = tmp_path / "ds"
    assert run_cli(["datasets", "build", "addition", "--out", str(out), *DS_A], capsys)[0] == 0
    before, before_outside = digests(out), outside(tmp_path, out)

    calls: list[str] = []
    _patch_writes(monkeypatch, _full_disk(fail_at, calls))
    code, err = run_cli(["datasets", "build", "addition", "--out", str(out), *DS_B], capsys)
    assert len(calls) >= fail_at
    assert_one_line(code, err, "No space left on device", "free some space and rerun")
    monkeypatch.undo()
    assert digests(out) == before  # the previous complete dataset is untouched
    assert outside(tmp_path, out) == before_outside
    assert leftovers(out) == []
    assert not outdir.lock_path(out).exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["datasets", "build", "addition", "--out", str(out), *DS_A])
    assert not exc.value.code and "already up to date" in capsys.readouterr().out


def test_a_full_disk_while_building_a_new_dataset_leaves_nothing_marked_complete(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ds"
    _patch_writes(monkeypatch, _full_disk(2, []))
    code, err = run_cli(["datasets", "build", "addition", "--out", str(out), *DS_A], capsys)
    assert_one_line(code, err, "No space left on device", "free some space and rerun")
    monkeypatch.undo()
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if not out.exists() else ["ds"])
    code, err = run_cli(["datasets", "show", str(out)], capsys)
    assert_one_line(code, err)


@pytest.fixture(scope="module")
def act(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("act")
    make_split(root / "validation", 48, 0, num_layers=2, d=4)
    make_split(root / "test", 48, 1, num_layers=2, d=4)
    return root


@pytest.fixture(scope="module")
def probe_reference(act, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("probe_ref") / "out"
    with pytest.raises(SystemExit) as exc:
        main(["probe", "--activations", str(act), "--out", str(out), *PROBE_ARGS])
    assert not exc.value.code
    return digests(out)


@pytest.mark.parametrize("fail_at", [2, 11])
def test_a_full_disk_during_the_probe_stage(
    tmp_path, monkeypatch, capsys, act, probe_reference, fail_at
) -> None:
    """Mid-run (a part, a score file, a table): one line, nothing marked complete, nothing else touched; once
    there is space again the same command finishes with the files of an uninterrupted run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    out = tmp_path / "out"
    before_act, before_outside = digests(act), outside(tmp_path, out)
    calls: list[str] = []
    _patch_writes(monkeypatch, _full_disk(fail_at, calls))
    argv = ["probe", "--activations", str(act), "--out", str(out), *PROBE_ARGS]
    code, err = run_cli(argv, capsys)
    assert len(calls) >= fail_at
    assert_one_line(code, err, "No space left on device", "free some space and rerun")
    monkeypatch.undo()
    assert not (out / "summary.json").exists()
    assert_one_line(*run_cli(["probe", "show", str(out)], capsys))
    assert digests(act) == before_act and outside(tmp_path, out) == before_outside
    assert leftovers(out) == []
    assert not outdir.lock_path(out).exists()
    assert run_cli(argv, capsys)[0] == 0
    assert digests(out) == probe_reference


def test_a_full_disk_cannot_touch_a_finished_probe_output_rerun(tmp_path, monkeypatch, capsys, act) -> None:
    """The same settings again on a full disk: every part is reused and nothing is rewritten, so it succeeds."""
    out = tmp_path / "out"
    argv = ["probe", "--activations", str(act), "--out", str(out), *PROBE_ARGS]
    assert run_cli(argv, capsys)[0] == 0
    before = digests(out)
    _patch_writes(monkeypatch, _full_disk(1, []))
    assert run_cli(argv, capsys)[0] == 0
    assert digests(out) == before


# ------------------------------------------------------------------------------------------- kill and resume
class _Killed(BaseException):
    """Stands for SIGKILL: nothing catches it (the CLI's handlers catch Exception and KeyboardInterrupt)."""


@contextlib.contextmanager
def renames(work: Path, kill_at: int | None) -> Iterator[list[str]]:
    """Count renames; at the `kill_at`-th, freeze `work` as it is and stop the command (see the module doc)."""
    calls: list[str] = []
    real = {"replace": os.replace, "rename": os.rename}
    frozen = work.with_name(work.name + ".frozen")

    def hook(name: str) -> Callable[..., None]:
        def renamed(src, dst, *args, **kwargs):
            if kill_at is not None and len(calls) >= kill_at:
                raise _Killed  # dead: not even a clean-up's rename runs
            calls.append(f"{name} {os.fspath(dst)}")
            if len(calls) == kill_at:
                shutil.copytree(work, frozen, symlinks=True)
                raise _Killed
            return real[name](src, dst, *args, **kwargs)

        return renamed

    os.replace, os.rename = hook("replace"), hook("rename")
    try:
        yield calls
    except _Killed:
        os.replace, os.rename = real["replace"], real["rename"]
        outdir.release_all()  # the dead process's flock goes with it; its lock file stays (it is in the copy)
        shutil.rmtree(work)
        os.rename(frozen, work)
    finally:
        os.replace, os.rename = real["replace"], real["rename"]


def _killed_run(argv: list[str], work: Path, kill_at: int) -> None:
    with renames(work, kill_at) as calls:
        main(argv)
    assert len(calls) == kill_at, "the command finished before the kill point"


def _points(n: int) -> list[int]:
    """The first rename (run.json), one in the middle of the grid, the last (summary.json)."""
    return sorted({1, n // 2, n})


def test_datasets_build_killed_anywhere_resumes_to_identical_files(tmp_path) -> None:
    """A rebuild with other sizes, killed at every rename (each split, dataset.json, both renames of the swap):
    the output is always one complete version, and rerunning gives the files of an uninterrupted build."""
    ref = tmp_path / "ref" / "ds"
    with pytest.raises(SystemExit):
        main(["datasets", "build", "addition", "--out", str(ref), *DS_A])
    old = digests(ref)
    with renames(ref.parent, None) as calls, pytest.raises(SystemExit):
        main(["datasets", "build", "addition", "--out", str(ref), *DS_B])
    new, n = digests(ref), len(calls)
    assert n >= 5 and new != old
    first = tmp_path / "first"
    with pytest.raises(SystemExit):
        main(["datasets", "build", "addition", "--out", str(first / "ds"), *DS_A])
    for k in range(1, n + 1):
        work = tmp_path / f"k{k}"
        out = work / "ds"
        shutil.copytree(first, work)  # the complete build with sizes A
        _killed_run(["datasets", "build", "addition", "--out", str(out), *DS_B], work, k)
        fileio.recover_swap(out)  # what the next writer does first, under the lock
        assert digests(out) in (old, new), f"killed at rename {k}: not one complete version"
        with pytest.raises(SystemExit) as exc:
            main(["datasets", "build", "addition", "--out", str(out), *DS_B])
        assert not exc.value.code, k
        assert digests(out) == new, f"killed at rename {k}"
        assert leftovers(out) == [], f"killed at rename {k}"


def test_probe_killed_at_several_points_resumes_to_identical_files(tmp_path, act, probe_reference) -> None:
    argv = ["--activations", str(act), *PROBE_ARGS]
    with renames(tmp_path / "count", None) as calls, pytest.raises(SystemExit):
        main(["probe", "--out", str(tmp_path / "count" / "out"), *argv])
    n = len(calls)
    assert n >= 10
    for k in _points(n):
        work = tmp_path / f"k{k}"
        out = work / "out"
        _killed_run(["probe", "--out", str(out), *argv], work, k)
        assert not (out / "summary.json").exists() or k == n
        with pytest.raises(SystemExit) as exc:
            main(["probe", "--out", str(out), *argv])
        assert not exc.value.code, k
        assert digests(out) == probe_reference, f"killed at rename {k} of {n}: {calls[k - 1]}"
        assert leftovers(out) == [], f"killed at rename {k}"
