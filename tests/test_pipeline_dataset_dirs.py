"""`[datasets] dirs`: `quirky run` on dataset directories the user already has (built or imported), copied into
the run byte for byte, reused while unchanged, replaced when changed, and refused in one line when unusable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pipeline import save_tiny, tiny_config
from test_safety_outdir import assert_one_line_error, run_cli, snapshot

from quirky.cli import main
from quirky.datasets.layout import META_FILE, SPLITS, split_path
from quirky.errors import QuirkyError
from quirky.pipeline.config import config_from_dict
from quirky.pipeline.run import run_pipeline


def build(out: Path, name: str = "addition", *extra: str) -> Path:
    """A dataset directory made by `quirky datasets build`, as a user would have it."""
    sizes = ["--n-train", "200", "--n-val", "120", "--n-test", "120"]
    if name == "addition":
        sizes += ["--option", "max_digits=2"]
    with pytest.raises(SystemExit) as e:
        main(["datasets", "build", name, "--out", str(out), *sizes, *extra])
    assert e.value.code in (0, None)
    return out


@pytest.fixture(scope="module")
def addition_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("data") / "addition")


def one_line(data: dict, *fragments: str) -> str:
    with pytest.raises(QuirkyError) as e:
        config_from_dict(data)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def test_dirs_config_errors_are_one_line(addition_dir: Path, tmp_path: Path) -> None:
    src = str(addition_dir)
    one_line(
        {"datasets": {"names": ["addition"], "dirs": {"capitals": src}}},
        "[datasets] dirs names capitals, which [datasets] names does not list",
    )
    for key, value in (("options", {"max_digits": 2}), ("sources", "a.csv")):
        one_line(
            {"datasets": {"names": ["addition"], "dirs": {"addition": src}, key: {"addition": value}}},
            f"[datasets] {key} names addition, which [datasets] dirs gives as an existing directory",
        )
    one_line(
        {"datasets": {"names": ["addition"], "dirs": {"addition": str(tmp_path / "nowhere")}}},
        "[datasets] dirs.addition:",
        "does not exist",
    )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    one_line(
        {"datasets": {"names": ["mine"], "dirs": {"mine": str(tmp_path / "notes")}}},
        "[datasets] dirs.mine:",
        f"not a quirky dataset directory (no {META_FILE})",
    )
    one_line(
        {"datasets": {"names": ["capitals"], "dirs": {"capitals": src}}},
        "dirs.capitals:",
        "holds dataset 'addition', not 'capitals'",
    )
    one_line({"datasets": {"names": ["../up"], "dirs": {"../up": src}}}, "dirs names a dataset '../up'")
    # a name given by a directory is not looked up in the registry; the others still are
    cfg = config_from_dict({"datasets": {"names": ["mine", "hemisphere"], "dirs": {"mine": src}}})
    assert cfg.datasets.dirs == {"mine": src}
    one_line(
        {"datasets": {"names": ["mine", "hemisfere"], "dirs": {"mine": src}}}, "unknown dataset 'hemisfere'"
    )
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine"


def test_setup_is_checked_against_the_directory_dataset(addition_dir: Path, tmp_path: Path) -> None:
    """The setup must fit the dataset the directory holds (grader setups exist only for addition)."""
    hemisphere = build(tmp_path / "hemi", "hemisphere", "--n-train", "40", "--n-val", "20", "--n-test", "20")
    ok = config_from_dict(
        {"datasets": {"names": ["mine"], "dirs": {"mine": str(addition_dir)}, "setup": "grader-first"}}
    )
    assert ok.datasets.setup == "grader-first"
    one_line(
        {"datasets": {"names": ["mine"], "dirs": {"mine": str(hemisphere)}, "setup": "grader-first"}},
        "setup 'grader-first' is not available for dataset 'mine'",
        "holds 'hemisphere'",
        "use one of single, mixture, standardized, all",
    )


def test_only_keeps_the_dirs_of_the_kept_datasets(addition_dir: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(
        {"datasets": {"names": ["hemisphere", "mine"], "dirs": {"mine": str(addition_dir)}}}
    )
    assert cfg.only(["mine"]).datasets.dirs == {"mine": str(addition_dir)}
    assert cfg.only(["hemisphere"]).datasets.dirs == {}


def test_run_refuses_a_missing_dir_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f'out = "{tmp_path / "run"}"\n[datasets]\nnames = ["addition"]\n'
        f'dirs = {{ addition = "{tmp_path / "gone"}" }}\n'
    )
    code, err = run_cli(["run", str(config)], capsys)
    assert_one_line_error(code, err, "[datasets] dirs.addition", "does not exist")
    assert not (tmp_path / "run").exists()


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (d / META_FILE, *(split_path(d, s) for s in SPLITS))}


def test_run_on_a_dataset_dir_copies_reuses_and_recopies(tmp_path: Path) -> None:
    """A run whose dataset comes from a `quirky datasets build` directory: the run's copy has the source's bytes,
    a rerun copies nothing and reuses every stage, a rebuilt source replaces the copy and the stages after it;
    the source is never written."""
    model = save_tiny(tmp_path / "llama", "llama")
    src = build(tmp_path / "data" / "addition")
    raw = tiny_config(tmp_path, [str(model)], ["my-addition"])
    del raw["datasets"]["options"]
    raw["datasets"]["dirs"] = {"my-addition": str(src)}
    raw["probe"]["methods"] = ["lr", "mean-diff"]
    raw["intervene"]["enabled"] = False
    cfg = config_from_dict(raw)
    run = Path(cfg.out)
    copy = run / "datasets" / "my-addition"
    logs: list[str] = []

    before = snapshot(src)
    run_pipeline(cfg, log=logs.append)
    assert snapshot(src) == before
    assert _files(copy) == _files(src)
    assert sorted(p.name for p in copy.iterdir()) == sorted([".quirky-output.json", *_files(src)])
    assert any(m.startswith("dataset my-addition: copied from") for m in logs), logs
    assert (run / "report" / "report.html").is_file()
    store = next((run / "activations").rglob("validation/store.json"))
    old_store = json.loads(store.read_text())["fingerprint"]
    mtimes = {
        p: p.stat().st_mtime_ns
        for p in run.rglob("*")
        if p.is_file() and "report" not in p.parts and p.name != "run.json"
    }

    logs.clear()
    run_pipeline(cfg, log=logs.append)
    assert any(m.startswith("dataset my-addition: cached from") for m in logs), logs
    changed = [str(p) for p, t in mtimes.items() if p.stat().st_mtime_ns != t]
    assert changed == [], f"a rerun on an unchanged source rewrote {changed}"

    build(src, "addition", "--seed", "1")  # the user rebuilds the source with other settings
    before = snapshot(src)
    logs.clear()
    run_pipeline(cfg, log=logs.append)
    assert snapshot(src) == before
    assert any(m.startswith("dataset my-addition: copied from") for m in logs), logs
    assert _files(copy) == _files(src)
    assert json.loads(store.read_text())["fingerprint"] != old_store  # extracted again from the new data


def test_a_source_edited_after_it_was_written_is_refused(addition_dir: Path, tmp_path: Path) -> None:
    """Reuse and downstream caching rest on dataset.json's fingerprint, so split files that no longer have the
    digests it records are refused (in one line, before any copy) rather than copied under a stale fingerprint."""
    import shutil

    from quirky.pipeline.run import build_datasets

    src = tmp_path / "edited"
    shutil.copytree(addition_dir, src)
    shutil.copyfile(split_path(src, "validation"), split_path(src, "test"))  # still a readable split
    cfg = config_from_dict(
        {"out": str(tmp_path / "run"), "datasets": {"names": ["e"], "dirs": {"e": str(src)}}}
    )
    with pytest.raises(QuirkyError) as e:
        build_datasets(cfg, tmp_path / "run", log=lambda _m: None)
    assert "\n" not in str(e.value) and "the test split(s) of" in str(e.value)
    assert not (tmp_path / "run" / "datasets" / "e").exists()
