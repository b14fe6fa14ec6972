"""The transfer experiments: grid parsing, EIL and PGR against hand computations, and `quirky probe` end to end
on synthetic activation stores (outputs, resumability, determinism, bad input)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from quirky.cli import main
from quirky.errors import QuirkyError
from quirky.experiments import (
    average_pgr,
    default_grid,
    earliest_informative_layer,
    parse_experiment,
    parse_experiments,
    pgr,
)
from quirky.experiments.evaluate import EvalSettings
from quirky.experiments.transfer import TransferConfig, run_transfer
from quirky.extraction.store import write_store
from quirky.probes import load_probe
from quirky.probes.metrics import auroc


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS thread: these tiny problems are dominated by thread start-up on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---- grid -----------------------------------------------------------------------------------------------------
def test_parse_experiments():
    e = parse_experiment(" A -> A, B ,AH,BH ")
    assert (e.train, e.tests, e.train_label, e.tag) == ("A", ("A", "B", "AH", "BH"), "label", "A")
    e = parse_experiment("all@alice_label->all,BH")
    assert e.tag == "all@alice_label" and str(e) == "all@alice_label->all,BH"
    assert parse_experiment("AE->BH").with_source().tests == ("AE", "BH")
    merged = parse_experiments(["A->A,B;B->B", "A->AH"])
    assert [(m.train, m.tests) for m in merged] == [("A", ("A", "B", "AH")), ("B", ("B",))]
    for bad in ("A", "A->", "X->A", "A->A,Q", "A@foo->A", "A->A,A", "A->B->C"):
        with pytest.raises(QuirkyError):
            parse_experiment(bad)
    grid = default_grid(["lr", "ccs", "random"])
    assert [str(e) for e in grid["lr"]] == ["A->A,B,AH,BH", "B->B,A,BH", "AE->AE,AH,BE,BH"]
    assert "all@alice_label->all,BH" in [str(e) for e in grid["ccs"]]
    assert [str(e) for e in grid["random"]] == ["AE->AE,BH"]


# ---- EIL and PGR by hand --------------------------------------------------------------------------------------
def test_earliest_informative_layer_by_hand():
    # max 0.95 -> threshold 0.95 * 0.45 = 0.4275 above chance; 0.90 (0.40) is short, 0.95 is the first to reach it
    assert earliest_informative_layer([0.5, 0.6, 0.9, 0.95, 0.7]) == 3
    # 0.5 + 0.95 * (0.9 - 0.5) = 0.88: layer 1 (0.89) qualifies
    assert earliest_informative_layer([0.55, 0.89, 0.9, 0.9]) == 1
    assert earliest_informative_layer([0.4, 0.45, 0.3]) == 1  # nothing beats chance: L // 2
    assert earliest_informative_layer([math.nan, 0.9, 0.6]) == 1
    assert earliest_informative_layer([math.nan] * 4) == 2


def test_pgr_and_reference_averaging_by_hand():
    assert pgr(0.8, 0.5, 0.9) == pytest.approx(0.75)
    assert math.isnan(pgr(0.8, 0.7, 0.7)) and math.isnan(pgr(math.nan, 0.5, 0.9))
    rows = pd.DataFrame(
        {
            "table": "AE->BH",
            "method": "lr",
            "train": "AE",
            "model": ["m1", "m2", "m1", "m2", "m1"],
            "dataset": ["d1", "d1", "d2", "d2", "pop"],
            "auc": [0.8, 0.6, 0.9, 0.9, 0.99],
            "floor": [0.5, 0.5, 0.6, 0.8, 0.5],
            "ceiling": [0.9, 0.9, 1.0, 0.8, 0.51],
        }
    )
    out = average_pgr(rows, exclude_datasets=["pop"])
    d1 = out[out["dataset"] == "d1"].iloc[0]
    # d1: models averaged first: auc 0.7, floor 0.5, ceiling 0.9 -> 0.5
    assert (d1["auc"], d1["floor"], d1["ceiling"], d1["pgr"]) == pytest.approx((0.7, 0.5, 0.9, 0.5))
    d2 = out[out["dataset"] == "d2"].iloc[0]
    assert d2["pgr"] == pytest.approx((0.9 - 0.7) / (0.9 - 0.7))
    avg = out[out["dataset"] == "average"].iloc[0]
    # averaged row: (mean auc - mean floor) / (mean ceiling - mean floor) = (0.8 - 0.6) / (0.9 - 0.6)
    assert avg["pgr"] == pytest.approx(0.2 / 0.3)
    assert avg["pgr"] != pytest.approx((d1["pgr"] + d2["pgr"]) / 2)  # not the mean of ratios
    assert "pop" not in set(out["dataset"])
    # a NaN dataset is dropped from the sums *and* the count (the original's results/viz.py divided by all)
    rows.loc[2:3, "auc"] = math.nan
    avg = average_pgr(rows, exclude_datasets=["pop"]).query("dataset == 'average'").iloc[0]
    assert avg["pgr"] == pytest.approx(0.5) and avg["n_datasets"] == 1


# ---- synthetic activation stores ------------------------------------------------------------------------------
def make_split(path, n, seed, *, num_layers=4, d=8, drop_bob_hard=False, model="toy-lm"):
    """A quirky-looking split: the truth (Alice's label) is linearly readable with strength growing by layer, the
    persona's output label along another direction; contrast pairs carry the truth on the answer side."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    character = np.where(np.arange(n) % 2 == 0, "Alice", "Bob")
    alice = rng.integers(0, 2, n)
    bob = np.where(rng.random(n) < 0.5, alice, 1 - alice)
    label = np.where(character == "Alice", alice, bob)
    q = rng.random(n)
    if drop_bob_hard:
        q = np.where(character == "Bob", q * 0.7, q)
    meta = pd.DataFrame(
        {
            "id": [f"{seed}-{i}" for i in range(n)],
            "character": character,
            "label": label,
            "alice_label": alice,
            "bob_label": bob,
            "difficulty_quantile": q,
            "template": 0,
        }
    )
    truth, out_dir, side_dir = (torch.randn(d, generator=g) for _ in range(3))
    strength = torch.linspace(0.3, 2.0, num_layers)[:, None, None]
    a = torch.tensor(2.0 * alice - 1)[None, :, None].float()
    lab = torch.tensor(2.0 * label - 1)[None, :, None].float()
    hid = torch.randn(num_layers, n, d, generator=g) + strength * (a * truth + 0.5 * lab * out_dir) + 3
    side = torch.tensor([-1.0, 1.0])[None, None, :, None]
    pairs = (
        hid[:, :, None, :]
        + side * (0.5 * strength[..., None] * a[..., None] * truth + side_dir)
        + 0.3 * torch.randn(num_layers, n, 2, d, generator=g)
    )
    lm = (torch.tensor(2.0 * label - 1) + torch.randn(n, generator=g, dtype=torch.float64)).float()
    config = {"source": {"model": {"model": {"name": model}, "adapter": None}, "dataset": {"name": "synth"}}}
    return write_store(path, hiddens=hid, pairs=pairs, lm_log_odds=lm, meta=meta, config=config)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("act")
    make_split(root / "validation", 320, 0)
    make_split(root / "test", 240, 1)
    return root


FAST = {"random": {"n_directions": 400}, "ccs": {"restarts": 10, "max_iter": 200}}


def _cfg(**kw):
    base = {"eval": EvalSettings(n_boot=50), "probe_options": FAST}
    base.update(kw)
    return TransferConfig(**base)


@pytest.fixture(scope="module")
def full_run(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe_out")
    summary = run_transfer(stores, out, _cfg())
    return out, summary


def test_full_grid_outputs(full_run, stores):
    out, _ = full_run
    for f in (
        "results.parquet",
        "results.csv",
        "summary.json",
        "run.json",
        "eil.csv",
        "pgr.csv",
        "random.parquet",
    ):
        assert (out / f).is_file(), f
    res = pd.read_parquet(out / "results.parquet")
    assert set(res["method"]) == {
        "lm",
        "lr",
        "lr-on-pair",
        "mean-diff",
        "mean-diff-on-pair",
        "lda",
        "ccs",
        "crc",
        "random",
    }
    # one row per (method, train, test, layer, label column, filter): no duplicates
    key = ["model", "dataset", "method", "train", "train_label", "test", "layer", "label_col", "filter"]
    assert not res.duplicated(key).any()
    assert set(res["model"]) == {"toy-lm"} and set(res["dataset"]) == {"synth"}
    lr_a = res[(res.method == "lr") & (res.train == "A")]
    assert set(lr_a["test"]) == {"A", "B", "AH", "BH"} and set(lr_a["layer"]) == {0, 1, 2, 3}
    assert len(lr_a) == 4 * 4 * 3 * 3
    lm = res[res.method == "lm"]
    assert set(lm["layer"]) == {-1}
    # CIs bracket the point estimates where defined
    ok = res.dropna(subset=["auroc_lo", "auroc_hi"])
    ok = ok[ok.method != "random"]
    assert len(ok) > 0 and ((ok.auroc_lo <= ok.auroc + 1e-12) & (ok.auroc <= ok.auroc_hi + 1e-12)).all()
    # the summary's JSON is strict (no NaN tokens) and holds the headline numbers
    text = (out / "summary.json").read_text()
    assert "NaN" not in text
    s = json.loads(text)
    assert s["num_layers"] == 4 and set(s["pgr"]) == {"AE->BH", "A->B"}
    assert "ccs (all@alice_label)" in s["pgr"]["AE->BH"]["methods"]
    assert s["eil"]["lr"]["A"]["transfer"]["B"]["all"]["alice_label"] is not None
    q = pd.read_parquet(out / "random.parquet")
    assert q["quantile"].min() >= 10 / 400  # only estimable quantile levels


def test_summary_numbers_recomputed_by_hand(full_run, stores):
    out, s = full_run
    res = pd.read_parquet(out / "results.parquet")

    def au(method, train, test, layer, label="alice_label", filt="all"):
        r = res[
            (res.method == method)
            & (res.train == train)
            & (res.test == test)
            & (res.layer == layer)
            & (res.label_col == label)
            & (res["filter"] == filt)
        ]
        return float(r.auroc.iloc[0])

    curve = [au("mean-diff", "AE", "AE", layer, label="label") for layer in range(4)]
    eil = earliest_informative_layer(curve)
    assert s["eil"]["mean-diff"]["AE"]["layer"] == eil
    floor, ceiling = au("lr", "B", "BH", 3), au("lr", "A", "AH", 3)
    table = s["pgr"]["AE->BH"]
    assert table["floor"] == pytest.approx(floor) and table["ceiling"] == pytest.approx(ceiling)
    auc = au("mean-diff", "AE", "BH", eil)
    assert table["methods"]["mean-diff"]["pgr"] == pytest.approx((auc - floor) / (ceiling - floor))
    pgrs = [v["pgr"] for v in table["methods"].values()]
    assert table["method_average"]["pgr"] == pytest.approx(np.mean(pgrs))
    # the stored scores are the probe's scores on the test subset, and reproduce the table's AUROC
    from quirky.extraction.store import open_store

    test = open_store(stores / "test")
    scores = load_file(out / "scores" / "AE" / "mean-diff.safetensors")
    idx = scores["BH.index"].numpy()
    probe = load_probe(out / "probes" / "AE" / "mean-diff.safetensors")
    torch.testing.assert_close(probe.score(test.hiddens())[:, idx], scores["BH"])
    y = torch.tensor(test.meta["alice_label"].to_numpy()[idx])
    assert float(auroc(scores["BH"][eil], y)) == pytest.approx(auc)


def test_resume_and_determinism(stores, tmp_path):
    cfg = _cfg(methods=("lr", "ccs"), experiments=("A->A,B", "B->B,A,BH", "AE->BH"))
    logs: list[str] = []
    run_transfer(stores, tmp_path / "a", cfg, log=logs.append)
    first = (tmp_path / "a" / "results.csv").read_bytes()
    logs.clear()
    run_transfer(stores, tmp_path / "a", cfg, log=logs.append)
    assert sum("skipped" in m for m in logs) == 6  # 2 methods x 3 experiments, all resumed
    assert (tmp_path / "a" / "results.csv").read_bytes() == first
    run_transfer(stores, tmp_path / "b", cfg)
    for f in ("results.csv", "summary.json", "pgr.csv"):
        assert (tmp_path / "b" / f).read_bytes() == (tmp_path / "a" / f).read_bytes()
    # changing one method's options reruns only that method
    logs.clear()
    cfg2 = _cfg(
        methods=("lr", "ccs"),
        experiments=cfg.experiments,
        probe_options={**FAST, "ccs": {"restarts": 11, "max_iter": 200}},
    )
    run_transfer(stores, tmp_path / "a", cfg2, log=logs.append)
    assert sum("skipped" in m for m in logs) == 3


def test_empty_subset_and_single_class_are_marked(tmp_path):
    root = tmp_path / "act"
    make_split(root / "validation", 200, 2, drop_bob_hard=True)
    make_split(root / "test", 160, 3, drop_bob_hard=True)
    summary = run_transfer(
        root, tmp_path / "out", _cfg(methods=("lr", "mean-diff"), experiments=("BH->BH", "A->A,BH"))
    )
    res = pd.read_parquet(tmp_path / "out" / "results.parquet")
    bh_train = res[(res.train == "BH") & (res.method == "lr")]
    assert bh_train.auroc.isna().all() and bh_train.note.str.contains("empty").all()
    bh_test = res[(res.train == "A") & (res.test == "BH")]
    assert bh_test.auroc.isna().all() and (bh_test.n == 0).all()
    assert any("empty" in n for n in summary["notes"])
    assert not (tmp_path / "out" / "probes" / "BH").exists()


def test_mismatched_and_missing_stores(tmp_path):
    make_split(tmp_path / "validation", 80, 0, d=8)
    make_split(tmp_path / "test", 80, 1, d=6)
    with pytest.raises(QuirkyError, match="same model"):
        run_transfer(tmp_path, tmp_path / "out", _cfg(methods=("lr",)))
    with pytest.raises(QuirkyError, match="no 'dev' store"):
        run_transfer(tmp_path, tmp_path / "out", _cfg(methods=("lr",), test_split="dev"))
    with pytest.raises(QuirkyError, match="unknown probe method"):
        run_transfer(tmp_path, tmp_path / "out", _cfg(methods=("svm",)))


def test_cli_run_and_show(stores, tmp_path, capsys):
    def run(argv):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out, err = capsys.readouterr()
        return int(exc.value.code or 0), out, err

    out_dir = tmp_path / "cli"
    code, out, _ = run(
        [
            "probe",
            "--activations",
            str(stores),
            "--out",
            str(out_dir),
            "-m",
            "lr,mean-diff",
            "-e",
            "A->A,B,AH,BH",
            "-e",
            "B->B,BH;AE->BH",
            "--n-boot",
            "20",
            "-q",
        ]
    )
    assert code == 0, out
    assert "mean-diff" in out and (out_dir / "summary.json").is_file()
    code, out, _ = run(["probe", "show", str(out_dir)])
    assert code == 0 and "PGR" in out and "lr" in out
    code, _, err = run(["probe", "--activations", str(stores), "--out", str(out_dir), "-e", "A->Z"])
    assert code == 2 and "unknown subset" in err and "Traceback" not in err
    code, _, err = run(["probe", "show", str(tmp_path / "nothing")])
    assert code == 2 and "summary.json" in err


def test_one_kind_of_features_in_memory_and_order_free_outputs(stores, tmp_path, monkeypatch):
    """The grid runs the hidden-state methods, then the pair methods, holding one kind of features at a time;
    the tables come out in the configured order and with the same numbers whichever order the methods are given
    in (rows compared with a run of each method alone)."""
    from quirky.experiments import transfer

    held: list[set[str]] = []
    features = transfer._Splits.features

    def spy(self, split, pair):
        out = features(self, split, pair)
        held.append({kind for _, kind in self._cache if kind != "lm"})
        return out

    monkeypatch.setattr(transfer._Splits, "features", spy)
    methods = ("lr-on-pair", "lr", "mean-diff-on-pair")
    mixed = run_transfer(stores, tmp_path / "mixed", _cfg(methods=methods))
    assert held and all(len(kinds) == 1 for kinds in held)
    assert [k for k in dict.fromkeys(kinds.pop() for kinds in held)] == ["hiddens", "pairs"]
    rows = pd.read_parquet(tmp_path / "mixed" / "results.parquet")
    assert list(dict.fromkeys(rows["method"])) == ["lm", *methods]
    for method in methods:
        alone = run_transfer(stores, tmp_path / method, _cfg(methods=(method,)))
        want = pd.read_parquet(tmp_path / method / "results.parquet")
        pd.testing.assert_frame_equal(
            rows[rows["method"] == method].reset_index(drop=True),
            want[want["method"] == method].reset_index(drop=True),
        )
        assert alone["num_layers"] == mixed["num_layers"]
