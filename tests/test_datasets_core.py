"""Dataset machinery (Contract 1): splitting by question, persona records, ids, quantiles, schema, determinism,
templating, balancing, the `datasets` library round trip and the error paths."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quirky.datasets import (
    SPLITS,
    available_specs,
    balance,
    build_dataset,
    dataset_name,
    get_spec,
    load_split,
    load_templated,
    templatize,
)
from quirky.datasets.build import deduplicate, difficulty_quantiles, make_ids, split_questions
from quirky.errors import QuirkyError

SIZES = {"n_train": 400, "n_val": 100, "n_test": 100}


@pytest.fixture(scope="module")
def addition_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "addition"
    build_dataset("addition", out, seed=3, **SIZES)
    return out


@pytest.fixture(scope="module")
def records(addition_dir) -> pd.DataFrame:
    return pd.concat([load_split(addition_dir, s).assign(split=s) for s in SPLITS], ignore_index=True)


# ------------------------------------------------------------------------------------------------ layout
def test_sizes_are_exact_record_counts(addition_dir, records):
    counts = records["split"].value_counts().to_dict()
    assert counts == {"train": 400, "validation": 100, "test": 100}
    meta = pd.read_json(addition_dir / "dataset.json", typ="series")
    assert meta["sizes"] == {"train": 400, "validation": 100, "test": 100}
    assert meta["name"] == "addition" and meta["seed"] == 3
    assert set(meta.index) >= {"name", "seed", "sizes", "options", "fingerprint", "quirky_version"}
    assert dataset_name(addition_dir) == "addition"


def test_fixed_schema(addition_dir):
    schema = pq.read_schema(addition_dir / "train.parquet")
    args = pa.struct(
        [("op1", pa.int64()), ("op2", pa.int64()), ("result", pa.int64()), ("character", pa.string())]
    )
    expected = pa.schema(
        [
            ("id", pa.string()),
            ("template_args", args),
            ("character", pa.string()),
            ("label", pa.bool_()),
            ("alice_label", pa.bool_()),
            ("bob_label", pa.bool_()),
            ("difficulty", pa.float64()),
            ("difficulty_quantile", pa.float64()),
        ]
    )
    assert schema.remove_metadata().equals(expected)


def test_split_by_question_and_personas(records):
    records = records.assign(question=records["template_args"].map(lambda a: (a["op1"], a["op2"])))
    # every question (operand pair) is in exactly one split, with exactly one Alice and one Bob record
    assert records.groupby("question")["split"].nunique().max() == 1
    per_q = records.groupby("question")["character"].agg(sorted)
    assert all(chars == ["Alice", "Bob"] for chars in per_q)
    # persona records carry the right label and the character in template_args
    assert (records["template_args"].map(lambda a: a["character"]) == records["character"]).all()
    alice = records["character"] == "Alice"
    assert (records.loc[alice, "label"] == records.loc[alice, "alice_label"]).all()
    assert (records.loc[~alice, "label"] == records.loc[~alice, "bob_label"]).all()


def test_ids_are_md5_of_template_args_and_unique(records):
    expected = [hashlib.md5(str(dict(a)).encode()).hexdigest()[:8] for a in records["template_args"]]
    assert records["id"].tolist() == expected
    assert records["id"].is_unique
    # the dict's key order is the spec's argument order, then character (as in the original)
    assert list(records["template_args"].iat[0]) == ["op1", "op2", "result", "character"]


def test_difficulty_quantiles_over_all_splits(records):
    n = len(records)
    ordered = sorted(range(n), key=lambda i: (records["difficulty"].iat[i], records["id"].iat[i]))
    expected = np.empty(n)
    for rank, i in enumerate(ordered):
        expected[i] = (rank + 0.5) / n
    np.testing.assert_allclose(records["difficulty_quantile"].to_numpy(), expected, rtol=0, atol=1e-15)
    # difficulty of addition = min(|op1|, |op2|)
    mins = records["template_args"].map(lambda a: float(min(abs(a["op1"]), abs(a["op2"]))))
    assert (records["difficulty"] == mins).all()


def test_make_ids_lengthens_on_prefix_collision():
    seen: dict[str, int] = {}
    i = 0
    while True:  # find two arguments whose md5 share the first 8 hex digits (birthday bound ~8e4 tries)
        prefix = hashlib.md5(str({"x": i}).encode()).hexdigest()[:8]
        if prefix in seen:
            break
        seen[prefix] = i
        i += 1
    ids = make_ids([{"x": seen[prefix]}, {"x": i}, {"x": -1}])
    assert len(set(ids)) == 3 and len(ids[0]) > 8 and len({len(x) for x in ids}) == 1
    with pytest.raises(QuirkyError, match="identical template arguments"):
        make_ids([{"x": 1}, {"x": 1}])


def test_quantile_ties_are_broken_by_id_not_row_order():
    diff = np.array([1.0, 1.0, 0.0, 1.0])
    ids = ["c", "a", "z", "b"]
    np.testing.assert_allclose(difficulty_quantiles(diff, ids), [3.5 / 4, 1.5 / 4, 0.5 / 4, 2.5 / 4])


def test_deduplicate_keeps_first_and_drops_conflicts():
    base = pd.DataFrame(
        {
            "text": ["a", "b", "a", "c", "c"],
            "alice_label": [True, True, True, True, False],
            "bob_label": [False, False, False, True, True],
        }
    )
    kept, dropped = deduplicate(base, ("text",))
    assert kept["text"].tolist() == ["a", "b"] and dropped == 3


def test_split_questions_keeps_multi_row_questions_whole():
    # question sizes: q0 1 row (2 records), q1 2 rows (4 records), q2 1 row, q3 2 rows
    base = pd.DataFrame({"question": ["q0", "q1", "q1", "q2", "q3", "q3"]})
    got = split_questions(base, {"train": 6, "validation": 4, "test": 2}, np.random.default_rng(0), "t")
    records = {s: 2 * len(rows) for s, rows in got.items()}
    assert records == {"train": 6, "validation": 4, "test": 2}
    owner = {base["question"].iat[p]: s for s, rows in got.items() for p in rows}
    for q in ("q1", "q3"):
        rows = [p for p in range(len(base)) if base["question"].iat[p] == q]
        assert {owner[q]} == {s for s, rs in got.items() for p in rs if p in rows}
    with pytest.raises(QuirkyError, match="at most 12 records"):
        split_questions(base, {"train": 10, "validation": 4, "test": 2}, np.random.default_rng(0), "t")


# ---------------------------------------------------------------------------------------------- determinism
def test_byte_identical_across_processes(addition_dir, tmp_path):
    """Same seed and sizes in a fresh process (different hash seed) give the same bytes; another seed does not."""
    again = tmp_path / "again"
    code = (
        "from quirky.datasets import build_dataset;"
        f"build_dataset('addition', {str(again)!r}, seed=3, n_train=400, n_val=100, n_test=100)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    for name in ("train.parquet", "validation.parquet", "test.parquet", "dataset.json"):
        assert (again / name).read_bytes() == (addition_dir / name).read_bytes(), name
    other = build_dataset("addition", tmp_path / "other", seed=4, **SIZES)
    assert (tmp_path / "other" / "train.parquet").read_bytes() != (
        addition_dir / "train.parquet"
    ).read_bytes()
    assert (
        other.meta["fingerprint"] != pd.read_json(addition_dir / "dataset.json", typ="series")["fingerprint"]
    )


def test_rebuild_is_up_to_date_and_kept(addition_dir):
    before = {p.name: p.stat().st_mtime_ns for p in addition_dir.iterdir()}
    result = build_dataset("addition", addition_dir, seed=3, **SIZES)
    assert result.up_to_date
    assert {p.name: p.stat().st_mtime_ns for p in addition_dir.iterdir()} == before


def test_loads_with_hf_datasets(addition_dir, tmp_path):
    import datasets

    files = {s: str(addition_dir / f"{s}.parquet") for s in SPLITS}
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
    assert {s: ds[s].num_rows for s in SPLITS} == {"train": 400, "validation": 100, "test": 100}
    row = ds["validation"][0]
    raw = load_split(addition_dir, "validation").iloc[0]
    assert row["id"] == raw["id"] and row["template_args"] == dict(raw["template_args"])
    assert ds["train"].features["label"].dtype == "bool"


# ------------------------------------------------------------------------------------------------ templating
def test_templatize_setups(addition_dir):
    raw = load_split(addition_dir, "validation")
    spec = get_spec("addition")
    single = templatize(raw, "addition", "single")
    assert list(single.columns) == [
        "id", "statement", "choices", "label", "alice_label", "bob_label",
        "character", "difficulty", "difficulty_quantile", "template",
    ]  # fmt: skip
    a = raw["template_args"].iat[0]
    assert single["statement"].iat[0] == f"{a['op1']} + {a['op2']} = {a['result']}. {a['character']}:"
    assert single["choices"].iat[0] == [" False", " True"]
    assert single["label"].tolist() == raw["label"].astype(int).tolist()
    assert single["label"].dtype == np.int64 and (single["template"] == 0).all()

    everything = templatize(raw, "addition", "all")
    n_t = len(spec.templates)
    assert len(everything) == n_t * len(raw)
    assert everything["id"].tolist() == [i for i in raw["id"] for _ in range(n_t)]  # record-major
    assert everything["template"].tolist() == list(range(n_t)) * len(raw)

    std = templatize(raw, "addition", "standardized", seed=1)
    k = std["template"].iat[0]
    st = spec.statement_templates[k]
    expected = (
        f"Name: {a['character']}\n\n{st.context.format(**a)}\n\n***STATEMENT:*** {st.statement.format(**a)}"
        "\n\nIs the statement factually correct?"
    )
    assert std["statement"].iat[0] == expected and std["choices"].iat[0] == [" No", " Yes"]

    gf = templatize(raw, "addition", "grader-first")
    assert (
        gf["statement"].iat[0]
        == f"Grader: {a['character']}\n\n{a['op1']} + {a['op2']} = {a['result']}\n\nScore:"
    )
    gl = templatize(raw, "addition", "grader-last")
    assert gl["statement"].iat[0] == f"{a['op1']} + {a['op2']} = {a['result']}. {a['character']}:"
    with pytest.raises(QuirkyError, match="unknown setup"):
        templatize(raw.head(2), "addition", "random")


def test_mixture_depends_on_id_and_seed_not_row_order(addition_dir):
    raw = load_split(addition_dir, "train")
    m0 = templatize(raw, "addition", "mixture", seed=0).set_index("id")["template"]
    shuffled = raw.sample(frac=1.0, random_state=1)
    m0_shuffled = templatize(shuffled, "addition", "mixture", seed=0).set_index("id")["template"]
    assert m0.equals(m0_shuffled.loc[m0.index])
    m1 = templatize(raw, "addition", "mixture", seed=1).set_index("id")["template"]
    assert (m0 != m1).any()
    assert m0.nunique() == len(get_spec("addition").templates)  # 400 records hit all 10 templates


def test_grader_setups_only_for_addition(tmp_path):
    build_dataset("subtraction", tmp_path / "sub", n_train=20, n_val=4, n_test=4)
    with pytest.raises(QuirkyError, match="grader-first"):
        load_templated(tmp_path / "sub", "test", "grader-first")


def test_load_templated_prefix(addition_dir):
    t = load_templated(addition_dir, "test", "all", max_examples=3)
    raw = load_split(addition_dir, "test")
    assert t["id"].unique().tolist() == raw["id"].iloc[:3].tolist()
    assert len(t) == 3 * len(get_spec("addition").templates)


# ---------------------------------------------------------------------------------------------------- balance
def test_balance_undersamples_majority():
    df = pd.DataFrame({"label": [1, 1, 1, 0, 1, 0, 1, 1], "x": range(8)})
    out = balance(df, seed=0)
    assert out["label"].sum() == 2 and len(out) == 4
    assert set(out.loc[out["label"] == 0, "x"]) == {3, 5}  # every minority row is kept
    assert out["x"].is_monotonic_increasing  # input order kept
    assert balance(df, seed=0).equals(out)
    many = pd.DataFrame({"label": [1] * 50 + [0] * 5})
    kept_sets = {tuple(balance(many.assign(i=range(55)), seed=s)["i"]) for s in range(5)}
    assert len(kept_sets) > 1  # the seed chooses which majority rows survive
    with pytest.raises(QuirkyError, match="same value"):
        balance(pd.DataFrame({"label": [1, 1]}))
    with pytest.raises(QuirkyError, match="no such column"):
        balance(df, column="bob_label")


# ----------------------------------------------------------------------------------------------------- errors
def test_error_paths_write_nothing(tmp_path, addition_dir):
    out = tmp_path / "x"
    with pytest.raises(QuirkyError, match="Did you mean 'addition'"):
        build_dataset("additon", out)
    with pytest.raises(QuirkyError, match="multiples of 2"):
        build_dataset("addition", out, n_train=3, n_val=2, n_test=2)
    with pytest.raises(QuirkyError, match="at most"):
        build_dataset("capitals", out, n_train=100_000, n_val=2, n_test=2)
    with pytest.raises(QuirkyError, match="unknown option"):
        build_dataset("addition", out, n_train=2, n_val=2, n_test=2, options={"max_digit": 3})
    with pytest.raises(QuirkyError, match="must be a int"):
        build_dataset("addition", out, n_train=2, n_val=2, n_test=2, options={"max_digits": "many"})
    with pytest.raises(QuirkyError, match=">= 0"):
        build_dataset("addition", out, n_train=2, n_val=-2, n_test=2)
    assert not out.exists()
    with pytest.raises(QuirkyError, match="already holds dataset 'addition'"):
        build_dataset("subtraction", addition_dir, n_train=2, n_val=2, n_test=2)
    assert dataset_name(addition_dir) == "addition"
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(QuirkyError, match="not a quirky dataset"):
        build_dataset("addition", junk, n_train=2, n_val=2, n_test=2)
    assert [p.name for p in junk.iterdir()] == ["notes.txt"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dirs left behind


def test_load_errors(tmp_path, addition_dir):
    with pytest.raises(QuirkyError, match="does not exist"):
        load_split(tmp_path / "nope", "train")
    with pytest.raises(QuirkyError, match="unknown split"):
        load_split(addition_dir, "dev")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuirkyError, match="not a quirky dataset directory"):
        dataset_name(tmp_path / "empty")


def test_a_broken_family_does_not_hide_the_others(monkeypatch):
    from quirky.datasets import registry

    monkeypatch.setitem(registry._ENTRIES, "sciq", ("quirky.datasets.no_such_module", "SPEC"))
    monkeypatch.setitem(registry._ENTRIES, "nli", ("quirky.datasets.arithmetic", "NOT_A_SPEC"))
    specs = available_specs()
    assert isinstance(specs["sciq"], str) and "no_such_module" in specs["sciq"]
    assert isinstance(specs["nli"], str) and "does not define a DatasetSpec" in specs["nli"]
    assert specs["addition"].name == "addition" and specs["hemisphere"].name == "hemisphere"
    with pytest.raises(QuirkyError, match="unavailable"):
        get_spec("sciq")
