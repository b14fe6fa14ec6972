"""The arithmetic datasets: label rules re-computed from the rendered prompts, crosstab, global operand
uniqueness, distractor hygiene (the original's binary_operation_dataset.py bugs), options."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from quirky.datasets import SPLITS, build_dataset, get_spec, load_split, templatize
from quirky.datasets.arithmetic import sloppy
from quirky.datasets.spec import BuildRequest
from quirky.errors import QuirkyError

OPS = ("addition", "subtraction", "multiplication", "modularaddition", "squaring")


def sloppy_by_digits(r: int) -> int:
    """Bob's rule written on the decimal string: bump the leading digit of |r| (a 9 becomes 10)."""
    s = str(abs(r))
    if r >= 0:
        return int(str(int(s[0]) + 1) + s[1:])
    return -int(str(int(s[0]) - 1) + s[1:])  # -r + 10^(k-1) shrinks the magnitude


def truth_of(name: str, a: int, b: int, mod: int) -> int:
    if name == "addition":
        return a + b
    if name == "subtraction":
        return a - b
    if name == "multiplication":
        return a * b
    if name == "modularaddition":
        return (a + b) % mod
    return a**2


def bob_of(name: str, a: int, b: int, mod: int) -> int:
    wrong = sloppy_by_digits(truth_of(name, a, b, mod))
    return wrong % mod if name == "modularaddition" else wrong


EQUATION = {
    "addition": re.compile(r"(\d+) \+ (\d+) = (-?\d+)"),
    "subtraction": re.compile(r"(\d+) - (\d+) = (-?\d+)"),
    "multiplication": re.compile(r"(\d+) \* (\d+) = (-?\d+)"),
    "modularaddition": re.compile(r"(\d+) \+ (\d+) = (-?\d+) \(mod (\d+)\)"),
    "squaring": re.compile(r"(\d+)\^2 = (-?\d+)"),
}


def parse(name: str, text: str) -> tuple[int, int, int, int]:
    """(a, b, result, mod) read back from a rendered prompt; every arithmetic template shows the equation."""
    m = EQUATION[name].search(text)
    assert m, f"no {name} equation in {text!r}"
    g = [int(x) for x in m.groups()]
    if name == "squaring":
        return g[0], 0, g[1], 0
    return g[0], g[1], g[2], (g[3] if name == "modularaddition" else 0)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("arith")
    out = {}
    for name in OPS:
        build_dataset(name, root / name, seed=7, n_train=1200, n_val=400, n_test=400)
        out[name] = pd.concat([load_split(root / name, s).assign(split=s) for s in SPLITS], ignore_index=True)
    return out


def test_sloppy_examples():
    assert sloppy(4770) == 5770  # the reference's 4768 + 2 example
    assert sloppy(-1000) == 0 and sloppy(999) == 1099 and sloppy(0) == 1 and sloppy(-37) == -27
    for r in range(-3000, 3000, 7):
        assert sloppy(r) == sloppy_by_digits(r)


@pytest.mark.parametrize("name", OPS)
def test_labels_recomputed_from_every_rendered_template(built, name):
    df = built[name]
    for setup in ("all", "standardized"):
        t = templatize(df.iloc[:200], name, setup)
        for text, alice, bob in zip(t["statement"], t["alice_label"], t["bob_label"], strict=True):
            a, b, r, mod = parse(name, text)
            assert alice == (r == truth_of(name, a, b, mod)), text
            assert bob == (r == bob_of(name, a, b, mod)), text
    # and on every record of the dataset, from template_args
    for args, alice, bob in zip(df["template_args"], df["alice_label"], df["bob_label"], strict=True):
        a, b, mod = args["op1"], args.get("op2", 0), args.get("mod", 0)
        assert alice == (args["result"] == truth_of(name, a, b, mod))
        assert bob == (args["result"] == bob_of(name, a, b, mod))


@pytest.mark.parametrize("name", OPS)
def test_crosstab_quarters(name):
    spec = get_spec(name)
    base = spec.build_base(
        BuildRequest(n_questions=1000, rng=np.random.default_rng(0), options=dict(spec.options))
    )
    counts = pd.crosstab(base["alice_label"], base["bob_label"])
    assert (
        counts.loc[True, False] == 250 and counts.loc[False, True] == 250 and counts.loc[False, False] == 500
    )
    assert True not in counts.columns or counts.loc[True].get(True, 0) == 0


@pytest.mark.parametrize("name", OPS)
def test_operands_unique_globally_and_never_in_two_splits(built, name):
    df = built[name]
    alice = df[df["character"] == "Alice"]
    commutative = name in ("addition", "multiplication", "modularaddition")

    def key(a):
        pair = (a["op1"], a.get("op2"))
        return tuple(sorted(pair)) if commutative else pair

    keys = alice["template_args"].map(key)
    assert keys.is_unique  # one base row per operand pair, so no pair can reach two splits
    assert alice.assign(k=keys).groupby("k")["split"].nunique().max() == 1


@pytest.mark.parametrize("name", OPS)
def test_distractors_are_not_trivially_false(built, name):
    df = built[name]
    alice = df[(df["character"] == "Alice") & ~df["alice_label"] & ~df["bob_label"]]
    assert len(alice) > 100
    mod = 113
    for args in alice["template_args"]:
        a, b = args["op1"], args.get("op2", 0)
        truth, bob, r = truth_of(name, a, b, mod), bob_of(name, a, b, mod), args["result"]
        if name == "modularaddition":
            assert 0 <= r < mod
        # one digit of the true or of Bob's result changed: same sign, same length, no leading zero
        parents = [p for p in (truth, bob) if (p < 0) == (r < 0) and len(str(abs(p))) == len(str(abs(r)))]
        assert any(
            sum(x != y for x, y in zip(str(abs(p)), str(abs(r)), strict=True)) == 1 for p in parents
        ), (
            args,
            truth,
            bob,
        )
        assert str(r) == str(int(str(r)))  # canonical rendering, e.g. no "-0" or "007"


def test_subtraction_has_negative_results_with_kept_sign(built):
    df = built["subtraction"]
    results = df["template_args"].map(lambda a: a["result"])
    assert (results < 0).mean() > 0.2


def test_max_digits_option_and_capacity_errors(tmp_path):
    build_dataset("addition", tmp_path / "a2", n_train=400, n_val=100, n_test=100, options={"max_digits": 2})
    df = load_split(tmp_path / "a2", "train")
    ops = df["template_args"].map(lambda a: max(a["op1"], a["op2"]))
    assert ops.max() < 100 and ops.min() >= 1
    with pytest.raises(QuirkyError, match="only 45 distinct operand pairs"):
        build_dataset("addition", tmp_path / "a1", n_train=100, n_val=2, n_test=2, options={"max_digits": 1})
    assert not (tmp_path / "a1").exists()
    with pytest.raises(QuirkyError, match="unbounded"):
        build_dataset("squaring", tmp_path / "s", n_train=-1, n_val=2, n_test=2)


def test_modulus_option(tmp_path):
    build_dataset(
        "modularaddition", tmp_path / "m", n_train=200, n_val=50 * 2, n_test=100, options={"mod": 97}
    )
    df = load_split(tmp_path / "m", "train")
    assert (df["template_args"].map(lambda a: a["mod"]) == 97).all()
    assert (df["template_args"].map(lambda a: a["result"]) < 97).all()
    t = templatize(df.head(4), "modularaddition", "single")
    assert "(mod 97)" in t["statement"].iat[0]


def test_difficulty_rule(built):
    sq = built["squaring"]
    assert (sq["difficulty"] == sq["template_args"].map(lambda a: float(a["op1"]))).all()
    mul = built["multiplication"]
    assert (mul["template_args"].map(lambda a: max(a["op1"], a["op2"])) < 1000).all()  # max_digits 3
