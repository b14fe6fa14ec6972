"""The output-directory rule (quirky.outdir): every command writes only into a new, empty, or its own earlier
output directory; anything else is refused with one line and leaves every file on disk exactly as it was."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quirky.cli import main
from quirky.errors import QuirkyError
from quirky.fileio import atomic_dir
from quirky.outdir import MARKER, check_output, claim_output, lock_path, release_output, replace_output


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under `root` with a digest of its bytes (directories: "dir")."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of `quirky ARGV`."""
    capsys.readouterr()  # drop what the test's own set-up printed
    with pytest.raises(SystemExit) as exc:
        main(argv)
    _, err = capsys.readouterr()
    return int(exc.value.code or 0), err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture
def user_files(tmp_path: Path) -> Path:
    """A directory of a user's own files that no command may touch."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("my notes")
    (d / "thesis").mkdir()
    (d / "thesis" / "draft.tex").write_text("\\section{x}")
    return d


def tiny_extraction() -> tuple[object, object, object]:
    """A tiny random model, its tokenizer and a two-row templated frame."""
    import pandas as pd

    from quirky.models.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer(["Is 1 + 1 = 2?", " No", " Yes"], bos=True)
    model = tiny_model("llama", len(tok), seed=0)
    df = pd.DataFrame(
        {
            "id": ["a", "b"],
            "statement": ["Is 1 + 1 = 2?"] * 2,
            "choices": [[" No", " Yes"]] * 2,
            "label": [1, 0],
            "alice_label": [1, 1],
            "bob_label": [0, 0],
            "character": ["Alice", "Bob"],
            "difficulty": [0.0, 1.0],
            "difficulty_quantile": [0.25, 0.75],
            "template": [0, 0],
        }
    )
    return model, tok, df


# ---- the rule itself ----------------------------------------------------------------------------------------
def test_rule_states(tmp_path: Path, user_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_output(tmp_path / "new", "anomaly") == "new"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", "anomaly") == "empty"
    with pytest.raises(QuirkyError, match=r"is not empty .*notes\.txt.* not an anomaly-detection output"):
        check_output(user_files, "anomaly")
    (tmp_path / "file").write_text("x")
    with pytest.raises(QuirkyError, match="not a directory"):
        check_output(tmp_path / "file", "report")
    with pytest.raises(QuirkyError, match="is an input"):
        check_output(user_files, "report", inputs=[user_files])
    with pytest.raises(QuirkyError, match="a parent of the input"):
        check_output(tmp_path, "report", inputs=[user_files / "thesis"])
    monkeypatch.chdir(user_files / "thesis")
    with pytest.raises(QuirkyError, match="is the working directory"):
        check_output(".", "extract")
    with pytest.raises(QuirkyError, match="a parent of the working directory"):
        check_output(user_files, "extract")


def test_previous_output_is_replaced_but_gained_files_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "a"
    with replace_output(out, "anomaly") as tmp:
        (tmp / "anomaly.json").write_text("{}")
    assert (out / MARKER).is_file() and check_output(out, "anomaly") == "previous"
    with pytest.raises(QuirkyError, match="output of `quirky anomaly`, not of `quirky report`"):
        check_output(out, "report")
    (out / "mine.txt").write_text("keep me")
    before = snapshot(tmp_path)
    with (
        pytest.raises(QuirkyError, match=r"holds files it did not write .*mine\.txt"),
        replace_output(out, "anomaly") as tmp,
    ):
        (tmp / "anomaly.json").write_text("{}")
    assert snapshot(tmp_path) == before


# ---- crash-safe swap ----------------------------------------------------------------------------------------
def test_a_failed_swap_keeps_the_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "d"
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("old")
    real_rename, real_replace = os.rename, os.replace

    def failing(src: object, dst: object) -> None:
        if Path(str(dst)) == out and str(src).endswith(".tmp"):  # renaming the new version in fails
            raise OSError(28, "No space left on device")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", failing)
    monkeypatch.setattr(
        os, "replace", lambda s, d: failing(s, d) if str(s).endswith(".tmp") else real_replace(s, d)
    )
    with pytest.raises(OSError), atomic_dir(out) as tmp:
        (tmp / "f").write_text("new")
    monkeypatch.undo()
    assert (out / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_crash_between_the_renames_is_recovered(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with replace_output(out, "report") as tmp:
        (tmp / "report.html").write_text("v1")
    # what a kill -9 right after "rename the old version aside" leaves behind
    os.rename(out, tmp_path / ".r.swap-abc123.old")
    (tmp_path / "r.x").mkdir()  # a sibling whose name starts like ours is never mistaken for it
    claim_output(out, "report")
    release_output(out)
    assert (out / "report.html").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "r.x"]


# ---- the write lock -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def held_elsewhere(out: Path, command: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the write lock of `out` until the block ends (then killed, like kill -9)."""
    script = (
        "import time\nfrom quirky.outdir import claim_output\n"
        f"claim_output({str(out)!r}, {command!r})\nprint('held', flush=True)\ntime.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_second_writer_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with (
        held_elsewhere(out, "anomaly") as holder,
        pytest.raises(
            QuirkyError, match=rf"being written by another `quirky anomaly` process \(pid {holder.pid}"
        ),
    ):
        claim_output(out, "anomaly")
    # the killed holder's lock file is left behind, holding no flock: it is taken over
    assert lock_path(out).is_file()
    assert claim_output(out, "anomaly") == "new"
    release_output(out)
    assert not lock_path(out).exists()


def test_two_extractions_into_one_out_never_mix(tmp_path: Path) -> None:
    from quirky.extraction.extract import extract_frame, partial_dir

    model, tok, df = tiny_extraction()
    out = tmp_path / "store"
    with held_elsewhere(out, "extract"), pytest.raises(QuirkyError, match="being written by another"):
        extract_frame(model, tok, df, out, source={"run": 2}, progress=False)
    assert not out.exists() and not partial_dir(out).exists()
    assert extract_frame(model, tok, df, out, source={"run": 2}, progress=False).n == 2


def test_unwritable_out_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(QuirkyError, match="cannot write in"):
            claim_output(ro / "out", "anomaly")
    finally:
        ro.chmod(0o755)


# ---- every command --------------------------------------------------------------------------------------------
def test_report_never_wipes_a_directory(tmp_path: Path, user_files: Path, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    (run / "datasets").mkdir(parents=True)
    (run / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, err = run_cli(["report", str(run), "--out", str(user_files)], capsys)
    assert_one_line_error(code, err, str(user_files), "not a report", "nothing was changed")
    code, err = run_cli(["report", str(run), "--out", str(run)], capsys)
    assert_one_line_error(code, err, "is an input")
    monkeypatch.chdir(user_files)
    code, err = run_cli(["report", str(run), "--out", "."], capsys)
    assert_one_line_error(code, err, "working directory")
    assert snapshot(tmp_path) == before
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["report", str(run)], capsys)  # the default RUN/report is new: written
    assert code == 0, err
    code, err = run_cli(["report", str(run)], capsys)  # and replaced: it is the report's own earlier output
    assert code == 0, err
    assert (run / "keep.txt").read_text() == "mine"


def test_anomaly_and_intervene_never_wipe_a_directory(tmp_path: Path, user_files: Path, capsys) -> None:
    before = snapshot(tmp_path)
    code, err = run_cli(["anomaly", "--probes", str(tmp_path / "p"), "--out", str(user_files)], capsys)
    assert_one_line_error(code, err, "not an anomaly-detection output")
    argv = ["intervene", "--model", "m", "--probes", str(tmp_path / "p"), "--dataset", str(tmp_path / "d")]
    code, err = run_cli([*argv, "--out", str(user_files)], capsys)
    assert_one_line_error(code, err, "not an intervention output")
    code, err = run_cli([*argv, "--out", str(user_files), "--overwrite"], capsys)
    assert_one_line_error(code, err, "not an intervention output")
    assert snapshot(tmp_path) == before


def test_datasets_build_keeps_unrelated_files_and_rebuilds_a_truncated_split(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    build = [
        "datasets",
        "build",
        "addition",
        "--out",
        str(out),
        "--n-train",
        "8",
        "--n-val",
        "4",
        "--n-test",
        "4",
    ]
    code, err = run_cli(build, capsys)
    assert code == 0, err
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, err = run_cli([*build[:-6], "--n-train", "10", "--n-val", "4", "--n-test", "4"], capsys)
    assert_one_line_error(code, err, "notes.txt", "nothing was changed")
    assert snapshot(tmp_path) == before
    (out / "notes.txt").unlink()
    data = (out / "train.parquet").read_bytes()
    (out / "train.parquet").write_bytes(data[: len(data) // 2])
    code, err = run_cli(build, capsys)
    assert code == 0 and "up to date" not in err, err
    assert (out / "train.parquet").read_bytes() == data


def test_extract_overwrite_never_empties_the_working_directory(
    tmp_path: Path, user_files: Path, monkeypatch
) -> None:
    from quirky.extraction.extract import extract_frame

    model, tok, df = tiny_extraction()
    before = snapshot(tmp_path)
    monkeypatch.chdir(user_files)
    with pytest.raises(QuirkyError, match="is the working directory"):
        extract_frame(model, tok, df, ".", source={}, overwrite=True, progress=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QuirkyError, match="not an activation store"):
        extract_frame(model, tok, df, user_files, source={}, overwrite=True, progress=False)
    assert snapshot(tmp_path) == before


def test_finetune_never_overwrites_its_dataset(tmp_path: Path, capsys) -> None:
    from test_finetune import save_tiny_model, write_toy_dataset

    model = save_tiny_model(tmp_path / "model")
    data = write_toy_dataset(tmp_path / "data", n_questions=12)
    before = snapshot(tmp_path)
    for out in (data, tmp_path):
        argv = ["finetune", "--model", str(model), "--dataset", str(data), "--out", str(out), "--overwrite"]
        code, err = run_cli([*argv, "--steps", "1"], capsys)
        assert_one_line_error(code, err, "input")
    assert snapshot(tmp_path) == before


def test_probe_never_writes_into_an_unrelated_folder(tmp_path: Path, user_files: Path, capsys) -> None:
    from test_experiments import make_split

    act = tmp_path / "act"
    make_split(act / "validation", 40, 0)
    make_split(act / "test", 40, 1)
    before = snapshot(tmp_path)
    code, err = run_cli(["probe", "--activations", str(act), "--out", str(user_files), "-q"], capsys)
    assert_one_line_error(code, err, "not a probe output")
    code, err = run_cli(["probe", "--activations", str(act), "--out", str(act), "-q"], capsys)
    assert_one_line_error(code, err, "is an input")
    assert snapshot(tmp_path) == before


def test_output_kinds_list_the_files_their_stages_write() -> None:
    """`outdir.KINDS` says which files each command owns (what a rerun may replace).  The light stages' names come
    from their output modules; the heavy ones (torch, pandas) are kept out of this early import, so their names are
    checked here against the constants their writers use: a renamed file would otherwise be refused as foreign."""
    from quirky.datasets.layout import META_FILE, SPLITS
    from quirky.experiments import probe_run
    from quirky.extraction.store import MANIFEST, STORE_JSON, chunk_name
    from quirky.outdir import KINDS, PROBE_TABLES
    from quirky.report import build

    def owns(kind: str, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in KINDS[kind].owned)

    assert KINDS["datasets"].signature == (META_FILE,)
    assert all(owns("datasets", n) for n in (META_FILE, *(f"{s}.parquet" for s in SPLITS)))
    assert KINDS["extract"].signature == (STORE_JSON,)
    assert all(owns("extract", n) for n in (STORE_JSON, MANIFEST, chunk_name(0), chunk_name(12)))
    probe_files = (probe_run.RUN_JSON, probe_run.PROBES, probe_run.SCORES, "parts")
    tables = (
        probe_run.SUMMARY_JSON,
        probe_run.RESULTS,
        probe_run.RANDOM,
        probe_run.EIL_CSV,
        probe_run.PGR_CSV,
    )
    assert all(owns("probe", n) for n in (*probe_files, *tables))
    assert set(tables) <= set(PROBE_TABLES)  # removed before a probe run's settings change
    assert all(owns("report", n) for n in (build.HTML, build.MARKDOWN, build.SUMMARY, build.FIGURES))


def test_a_foreign_directory_at_the_scratch_path_is_refused_not_deleted(tmp_path: Path) -> None:
    """Extraction (and interventions) keep an unfinished output in a hidden sibling `.OUT.partial`; a directory
    there that the command did not write (no state file) is the user's, so it is refused in one line and kept.
    An empty one (a run killed before its state file) and one of our own are taken over."""
    from quirky.extraction.extract import extract_frame
    from quirky.outdir import scratch_path

    model, tok, df = tiny_extraction()
    out = tmp_path / "store"
    scratch = scratch_path(out)
    scratch.mkdir()
    (scratch / "thesis.tex").write_text("mine\n")
    before = snapshot(tmp_path)
    with pytest.raises(QuirkyError, match="not written by quirky"):
        extract_frame(model, tok, df, out, source={"run": 3}, progress=False)
    after = snapshot(tmp_path)
    after.pop(lock_path(out).name)  # this process still holds the lock on `out` (released at exit)
    assert after == before
    (scratch / "thesis.tex").unlink()  # empty now: taken over
    assert extract_frame(model, tok, df, out, source={"run": 3}, progress=False).n == 2
    assert not scratch.exists()
