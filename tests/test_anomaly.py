"""Anomaly detection: detectors and metrics against analytic answers, scipy and hand computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from sklearn.metrics import roc_auc_score

from quirky.anomaly.detectors import (
    GaussianDetector,
    IsolationForestDetector,
    LofDetector,
    MahalanobisDetector,
    make_detector,
)
from quirky.anomaly.experiment import AnomalySplit, evaluate_detector, exclusion_reason
from quirky.anomaly.metrics import auroc, bootstrap_auroc, recall_at_fpr
from quirky.errors import QuirkyError


def _cov(rng: np.random.Generator, f: int) -> np.ndarray:
    a = rng.normal(size=(f, f))
    return a @ a.T + 0.5 * np.eye(f)


def test_gaussian_log_density_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    f = 6
    train = rng.multivariate_normal(rng.normal(size=f), _cov(rng, f), size=300)
    x = rng.normal(size=(50, f)) * 2
    det = GaussianDetector().fit(train)
    ref = stats.multivariate_normal(train.mean(axis=0), np.cov(train, rowvar=False, ddof=1)).logpdf(x)
    np.testing.assert_allclose(det.log_density(x), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(det.score(x), -ref, rtol=1e-10, atol=1e-10)
    assert det.jitter_ == 0.0


def test_subtract_diag_matches_hand_computation() -> None:
    rng = np.random.default_rng(1)
    f = 4
    train = rng.multivariate_normal(np.zeros(f), _cov(rng, f), size=200)
    x = rng.normal(size=(30, f))
    mu = train.mean(axis=0)
    cov = np.cov(train, rowvar=False, ddof=1)
    # by hand: full log-density minus the sum of per-feature univariate normal log-densities
    diff = x - mu
    full = -0.5 * (
        f * np.log(2 * np.pi)
        + np.linalg.slogdet(cov)[1]
        + np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    )
    diag = sum(stats.norm(mu[j], np.sqrt(cov[j, j])).logpdf(x[:, j]) for j in range(f))
    det = GaussianDetector(subtract_diag=True).fit(train)
    assert det.name == "gaussian-subtract-diag"
    np.testing.assert_allclose(det.log_density(x), full - diag, rtol=1e-9, atol=1e-9)


def _analytic_chi2_auroc(f: int, lam: float) -> float:
    """P(S_anomalous > S_normal) for S_normal ~ chi2_f and S_anomalous ~ noncentral chi2_f(lam)."""
    value, _ = integrate.quad(lambda s: stats.chi2(f).pdf(s) * stats.ncx2(f, lam).sf(s), 0, np.inf, limit=200)
    return float(value)


def test_gaussian_auroc_near_analytic_value() -> None:
    """Trusted and normal data ~ N(0, I); anomalies shifted by delta. With the fitted Gaussian ≈ the true one,
    the anomaly score is ‖x‖² + const: chi2 vs noncentral chi2, whose AUROC is computed by integration."""
    rng = np.random.default_rng(2)
    f, n = 3, 4000
    delta = np.array([1.2, 0.0, 0.0])
    split = AnomalySplit(
        trusted=rng.normal(size=(20000, f)),
        normal=rng.normal(size=(n, f)),
        anomalous=rng.normal(size=(n, f)) + delta,
    )
    result, scores = evaluate_detector("gaussian", split, n_boot=200, seed=0)
    expected = _analytic_chi2_auroc(f, float(delta @ delta))
    assert 0.6 < expected < 0.8
    assert abs(result["auroc"] - expected) < 0.02
    lo, hi = result["auroc_ci"]
    assert lo < result["auroc"] < hi and hi - lo < 0.05
    # recall at 5% FPR: threshold at the chi2 95% quantile, recall = noncentral chi2 survival
    expected_recall = stats.ncx2(f, float(delta @ delta)).sf(stats.chi2(f).ppf(0.95))
    assert abs(result["recall_at_fpr"]["0.05"] - expected_recall) < 0.04
    assert result["n_trusted"] == 20000 and result["n_normal"] == n and result["n_anomalous"] == n
    assert set(scores) == {"AE", "AH", "BH"} and len(scores["BH"]) == n


def test_metrics_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=300), 1)  # many ties
    labels = rng.random(300) < 0.4
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    # recall at FPR: the best TPR over all thresholds whose FPR is within the budget
    for budget in (0.01, 0.05, 0.2):
        best = 0.0
        for t in np.unique(np.r_[scores, np.inf]):
            flagged = scores >= t
            if flagged[~labels].mean() <= budget:
                best = max(best, flagged[labels].mean())
        assert recall_at_fpr(scores, labels, budget) == pytest.approx(best)


def test_bootstrap_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=60), 1)
    labels = rng.random(60) < 0.3
    n_boot, seed = 300, 7
    draw = np.random.default_rng(seed).integers(0, 60, size=(n_boot, 60))
    aucs = [roc_auc_score(labels[i], scores[i]) for i in draw if 0 < labels[i].sum() < 60]
    expected = np.quantile(aucs, [0.025, 0.975])
    np.testing.assert_allclose(
        bootstrap_auroc(scores, labels, n_boot=n_boot, seed=seed), expected, rtol=1e-12
    )


def test_mahalanobis_uses_ledoit_wolf_shrinkage() -> None:
    rng = np.random.default_rng(5)
    d = 40
    train = rng.normal(size=(30, d))  # fewer examples than dimensions: the sample covariance is singular
    x = rng.normal(size=(10, d))
    det = MahalanobisDetector().fit(train)
    s = float(det.state()["shrinkage"])
    mu = train.mean(axis=0)
    emp = np.cov(train, rowvar=False, ddof=0)
    shrunk = (1 - s) * emp + s * np.trace(emp) / d * np.eye(d)
    diff = x - mu
    expected = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(shrunk), diff)
    np.testing.assert_allclose(det.score(x), expected, rtol=1e-6)
    assert 0 < s < 1


@pytest.mark.parametrize("name", ["iforest", "lof", "mahalanobis", "gaussian"])
def test_every_detector_separates_a_large_shift_and_is_deterministic(name: str) -> None:
    rng = np.random.default_rng(6)
    split = AnomalySplit(
        trusted=rng.normal(size=(400, 4)),
        normal=rng.normal(size=(200, 4)),
        anomalous=rng.normal(size=(200, 4)) + 3,
    )
    a, _ = evaluate_detector(name, split, n_boot=50, seed=0)
    b, _ = evaluate_detector(name, split, n_boot=50, seed=0)
    assert a == b
    assert a["auroc"] > 0.95, a


def test_subtract_diag_sees_broken_correlations_only() -> None:
    """Anomalies with the trusted marginals but the opposite correlation: invisible per feature, visible to the
    full Gaussian and to its diagonal-subtracted variant."""
    rng = np.random.default_rng(8)

    def correlated(n: int, sign: float) -> np.ndarray:
        z = rng.normal(size=n)
        return np.c_[z, sign * z + 0.3 * rng.normal(size=n)]

    split = AnomalySplit(
        trusted=correlated(2000, 1.0), normal=correlated(500, 1.0), anomalous=correlated(500, -1.0)
    )
    full, _ = evaluate_detector("gaussian", split, n_boot=20)
    sub, _ = evaluate_detector("gaussian-subtract-diag", split, n_boot=20)
    assert full["auroc"] > 0.8 and sub["auroc"] > 0.8
    # a diagonal Gaussian (the per-feature part that subtract_diag removes) sees nothing
    mu, sd = split.trusted.mean(axis=0), split.trusted.std(axis=0, ddof=1)
    diag_score = lambda x: -stats.norm(mu, sd).logpdf(x).sum(axis=1)  # noqa: E731
    labels = np.r_[np.zeros(500), np.ones(500)]
    assert abs(auroc(np.r_[diag_score(split.normal), diag_score(split.anomalous)], labels) - 0.5) < 0.06


def test_singular_covariance_gets_recorded_jitter() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(100, 2))
    train = np.c_[base, base[:, :1]]  # a duplicated column: singular covariance
    det = GaussianDetector().fit(train)
    assert det.jitter_ > 0
    assert np.isfinite(det.score(np.c_[base[:5], base[:5, :1]])).all()


def test_bad_inputs() -> None:
    with pytest.raises(QuirkyError, match="unknown detector"):
        make_detector("svm")
    with pytest.raises(QuirkyError, match="no AH examples"):
        AnomalySplit(trusted=np.zeros((5, 2)), normal=np.zeros((0, 2)), anomalous=np.zeros((3, 2)))
    with pytest.raises(QuirkyError, match="NaN"):
        GaussianDetector().fit(np.full((4, 2), np.nan))
    with pytest.raises(QuirkyError, match="both normal and anomalous"):
        auroc(np.zeros(3), np.zeros(3))
    with pytest.raises(QuirkyError, match="at least 3"):
        LofDetector().fit(np.zeros((2, 2)))
    assert IsolationForestDetector(seed=1).name == "iforest"


def test_exclusions_are_explicit() -> None:
    assert exclusion_reason("addition", ["population"]) is None
    assert "confounded" in (exclusion_reason("population", ["population"]) or "")
    assert exclusion_reason("population", []) is None
    assert "exclusion list" in (exclusion_reason("sciq", ["sciq"]) or "")


# ------------------------------------------------------------------------------------------------ end to end
L_SYN, D_SYN = 3, 6


def _synthetic_store(path, n: int, seed: int, dataset: str = "addition", confounded: bool = False):
    """Hidden states with a truth direction (dim 0) whose sign flips at the middle layer for Bob's prompts, and a
    large Bob-only offset along dim 5 at every layer; persona/difficulty metadata like a real store's.
    `confounded`: easy examples all carry label 0 and hard ones label 1 (population's confound)."""
    import pandas as pd

    from quirky.extraction.store import write_store

    rng = np.random.default_rng(seed)
    bob = np.arange(n) % 2 == 1
    alice_label = rng.random(n) < 0.5
    bob_label = np.where(rng.random(n) < 0.5, alice_label, ~alice_label)
    label = np.where(bob, bob_label, alice_label)
    meta = pd.DataFrame(
        {
            "id": [f"ex{seed}-{i}" for i in range(n)],
            "character": np.where(bob, "Bob", "Alice"),
            "label": label.astype(int),
            "alice_label": alice_label.astype(int),
            "bob_label": bob_label.astype(int),
            "difficulty_quantile": (0.1 + 0.7 * label + 0.1 * rng.random(n)) if confounded else rng.random(n),
            "template": 0,
        }
    )
    h = rng.normal(size=(L_SYN, n, D_SYN))
    sign = 2.0 * label - 1.0
    for layer in range(L_SYN):
        flip = np.where(bob & (layer == 1), -1.0, 1.0)
        h[layer, :, 0] += 2.0 * sign * flip
        h[layer, :, 5] += 6.0 * bob
    source = {"model": {"model": {"name": "synthetic"}}, "dataset": {"name": dataset}}
    write_store(
        path,
        hiddens=torch.tensor(h, dtype=torch.float32),
        pairs=torch.zeros(L_SYN, n, 2, D_SYN),
        lm_log_odds=torch.tensor(sign, dtype=torch.float32),
        meta=meta,
        config={"source": source},
    )


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory):
    from quirky.experiments.evaluate import EvalSettings
    from quirky.experiments.transfer import TransferConfig, run_transfer

    root = tmp_path_factory.mktemp("anomaly")
    act = root / "activations" / "synthetic" / "addition"
    _synthetic_store(act / "validation", 800, 0)
    _synthetic_store(act / "test", 800, 1)
    out = root / "probes" / "synthetic" / "addition"
    run_transfer(
        act,
        out,
        TransferConfig(
            methods=("lr",), experiments=("AE->AE,AH,BH",), eval=EvalSettings(n_boot=10, filters=("all",))
        ),
    )
    return out


def test_anomaly_end_to_end_sees_no_bob_data(probe_dir, tmp_path, monkeypatch) -> None:
    """Through the real probe output: what each detector is fitted on is exactly the Alice-easy rows (probe scores
    from the probe stage's own score file; hidden states from the store), and the answers are the known ones."""
    from safetensors.torch import load_file

    import quirky.anomaly.experiment as experiment
    from quirky.anomaly.runner import run_anomaly
    from quirky.extraction.store import open_store

    fitted: list[tuple[str, np.ndarray]] = []
    real_make = experiment.make_detector

    def spying_make(name: str, seed: int = 0):
        det = real_make(name, seed=seed)
        real_fit = det.fit

        def fit(x):
            fitted.append((name, np.asarray(x).copy()))
            return real_fit(x)

        det.fit = fit  # type: ignore[method-assign]
        return det

    monkeypatch.setattr(experiment, "make_detector", spying_make)
    doc = run_anomaly([probe_dir], tmp_path / "out", methods=["lr"], n_boot=50, layer=2, exclude=["addition"])
    store = open_store(probe_dir.parent.parent.parent / "activations/synthetic/addition/test")
    scores = load_file(str(probe_dir / "scores/AE/lr.safetensors"))
    ae_rows = store.mask("AE")
    assert (store.meta["character"][ae_rows] == "Alice").all()
    np.testing.assert_array_equal(scores["AE.index"].numpy(), np.flatnonzero(ae_rows))
    trusted_scores = scores["AE"].double().T.numpy()
    trusted_hiddens = store.hiddens(2)[0].double().numpy()[ae_rows]
    assert {name for name, _ in fitted} == {
        "gaussian",
        "gaussian-subtract-diag",
        "iforest",
        "lof",
        "mahalanobis",
    }
    for name, x in fitted:
        expected = trusted_hiddens if name == "mahalanobis" else trusted_scores
        np.testing.assert_array_equal(x, expected)

    by = {r["detector"]: r for r in doc["results"]}
    assert by["mahalanobis"]["auroc"] > 0.99  # Bob's 6-sigma offset on dim 5
    assert by["mahalanobis"]["layer"] == 2 and by["mahalanobis"]["method"] == "hiddens"
    assert by["gaussian"]["auroc"] > 0.9  # Bob's truth direction flips sign at the middle layer only
    assert by["gaussian"]["n_normal"] == int(store.mask("AH").sum())
    assert by["gaussian"]["n_anomalous"] == int(store.mask("BH").sum())
    assert all(r["excluded"] and "exclusion list" in r["exclusion_reason"] for r in doc["results"])
    assert doc["summary"]["gaussian/lr"]["mean_auroc"] is None  # excluded runs stay out of the average
    # the reference detector's number is evaluate_detector on the probe stage's own scores
    split = experiment.AnomalySplit(
        trusted=trusted_scores,
        normal=scores["AH"].double().T.numpy(),
        anomalous=scores["BH"].double().T.numpy(),
    )
    ref, _ = evaluate_detector("gaussian", split, n_boot=50)
    assert by["gaussian"]["auroc"] == pytest.approx(ref["auroc"])
    assert by["gaussian"]["auroc_ci"] == pytest.approx(ref["auroc_ci"])


def test_anomaly_cli(probe_dir, tmp_path) -> None:
    import pandas as pd

    from quirky.cli import main

    out = tmp_path / "cli"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "anomaly",
                "--probes",
                str(probe_dir),
                "--out",
                str(out),
                "--detector",
                "gaussian,lof",
                "--n-boot",
                "20",
            ]
        )
    assert exit_info.value.code == 0
    doc = json.loads((out / "anomaly.json").read_text())
    assert [r["detector"] for r in doc["results"]] == ["gaussian", "lof"]
    assert not any(r["excluded"] for r in doc["results"])  # default exclusion is population only
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["subset"]) == {"AE", "AH", "BH"}
    assert len(scores) == 2 * sum(doc["results"][0][k] for k in ("n_trusted", "n_normal", "n_anomalous"))
    with pytest.raises(SystemExit) as exit_info:
        main(["anomaly", "--probes", str(tmp_path / "nothing"), "--out", str(out)])
    assert exit_info.value.code == 2


def test_single_class_trusted_subset_is_skipped_not_fatal(tmp_path) -> None:
    """Population-like data: the label decides the difficulty, so Alice-easy holds one class and the probe stage
    fits no AE probe.  Anomaly detection then skips the probe-score detectors for that run, says why, and still
    runs the hidden-state ones; a probe file that is merely missing stays an error."""
    import pandas as pd

    from quirky.anomaly.runner import run_anomaly
    from quirky.experiments.evaluate import EvalSettings
    from quirky.experiments.transfer import TransferConfig, run_transfer

    act = tmp_path / "activations" / "synthetic" / "population"
    for split, seed in (("validation", 0), ("test", 1)):
        _synthetic_store(act / split, 400, seed, dataset="population", confounded=True)
    probes = tmp_path / "probes" / "synthetic" / "population"
    run_transfer(
        act,
        probes,
        TransferConfig(
            methods=("lr",), experiments=("AE->AE,AH,BH",), eval=EvalSettings(n_boot=10, filters=("all",))
        ),
    )
    assert not (probes / "probes" / "AE" / "lr.safetensors").exists()
    doc = run_anomaly(
        [probes], tmp_path / "out", methods=["lr"], n_boot=20, detectors=["gaussian", "mahalanobis"]
    )
    assert doc["skipped"] == [
        {
            "model": "synthetic",
            "dataset": "population",
            "method": "lr",
            "reason": "training labels label on AE hold a single class",
        }
    ]
    assert [(r["detector"], r["method"]) for r in doc["results"]] == [("mahalanobis", "hiddens")]
    assert set(pd.read_parquet(tmp_path / "out" / "scores.parquet")["detector"]) == {"mahalanobis"}

    # the probe stage records the unit it could not fit as data (the note is kept for readers)
    summary = json.loads((probes / "summary.json").read_text())
    note = "training labels label on AE hold a single class"
    assert summary["skipped"] == [
        {
            "method": "lr",
            "experiment": "AE->AE,AH,BH",
            "train": "AE",
            "train_label": "label",
            "reason": "single-class",
            "note": note,
        }
    ]
    assert note in summary["notes"]
    # a summary written before the "skipped" field: its notes still say why
    del summary["skipped"]
    (probes / "summary.json").write_text(json.dumps(summary))
    old = run_anomaly([probes], tmp_path / "old", methods=["lr"], n_boot=20, detectors=["gaussian"])
    assert old["skipped"] == doc["skipped"] and old["results"] == []

    # without the probe stage's record or note, a missing AE probe is an error again
    summary["notes"] = []
    (probes / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(QuirkyError, match="no lr probe trained on AE"):
        run_anomaly([probes], tmp_path / "out2", methods=["lr"], n_boot=20, detectors=["gaussian"])
