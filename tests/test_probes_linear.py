"""`mean-diff`, `mean-diff-on-pair` and `lda`: directions against exact/independent computations, and the
fitted (not random) scale and bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from quirky.probes import load_probe, make_probe
from quirky.probes.metrics import accuracy
from quirky.probes.optim import fit_platt


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS thread: these tiny problems are dominated by thread start-up on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _gauss(num_layers=2, n=300, f=10, seed=0, shift=100.0, balanced=False):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.4).double()
    if balanced:
        y = (torch.arange(n) % 2).double()
    mix = torch.randn(f, f, generator=g, dtype=torch.float64) / f**0.5 + torch.eye(f, dtype=torch.float64)
    mu = torch.randn(num_layers, f, generator=g, dtype=torch.float64)
    x = (
        torch.randn(num_layers, n, f, generator=g, dtype=torch.float64) @ mix
        + y[None, :, None] * mu[:, None]
        + shift
    )
    return x, y


def test_mean_diff_exact_direction_and_fitted_calibration():
    x, y = _gauss()
    probe = make_probe("mean-diff").fit(x, y)
    xn, yn = x.numpy(), y.numpy().astype(bool)
    for layer in range(2):
        diff = xn[layer][yn].mean(0) - xn[layer][~yn].mean(0)
        np.testing.assert_allclose(probe.weight_[layer].numpy(), diff / np.linalg.norm(diff), atol=1e-12)
    # the direction is the unit difference times the fitted (positive here) scale
    assert bool((probe.scale_ > 0).all())
    # x is shifted by +100: a random bias would threshold everything to one class; the fitted one does not
    acc = accuracy(probe.score(x), y)
    assert bool((acc > 0.8).all()), acc


def test_fit_platt_matches_sklearn_one_dimensional_lr():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 500, generator=g, dtype=torch.float64) * 7 + 40
    y = (s[0] + torch.randn(500, generator=g, dtype=torch.float64) * 5 > 40).double()
    ridge = 1e-2
    a, c = fit_platt(s, y, ridge=ridge)
    for r in range(2):
        z = ((s[r] - s[r].mean()) / s[r].std()).numpy()[:, None]
        clf = LogisticRegression(C=1 / (2 * 500 * ridge), solver="newton-cholesky", tol=1e-12).fit(
            z, y.numpy()
        )
        alpha, gamma = clf.coef_[0, 0], clf.intercept_[0]
        sd, mu = s[r].std().item(), s[r].mean().item()
        assert a[r].item() == pytest.approx(alpha / sd, rel=1e-6)
        assert c[r].item() == pytest.approx(gamma - alpha * mu / sd, rel=1e-6, abs=1e-8)


def test_mean_diff_on_pair_really_uses_pairs():
    x, y = _gauss(f=6, seed=1)
    g = torch.Generator().manual_seed(2)
    pairs = torch.stack([x + torch.randn(x.shape, generator=g, dtype=x.dtype), -x], dim=2)
    probe = make_probe("mean-diff-on-pair").fit(pairs, y)
    flat = torch.cat([pairs[:, :, 0], pairs[:, :, 1]], dim=-1)
    ref = make_probe("mean-diff").fit(flat, y)
    torch.testing.assert_close(probe.weight_, ref.weight_)
    assert probe.direction.shape == (2, 12)
    torch.testing.assert_close(probe.score(pairs), ref.score(flat))
    # and it is not the last-token mean-diff (the original's bug until its commit e001e93)
    plain = make_probe("mean-diff").fit(x, y)
    assert not torch.allclose(probe.weight_[:, :6], plain.weight_, atol=1e-3)


def test_lda_direction_matches_sklearn():
    x, y = _gauss(n=400, f=8, balanced=True, shift=3.0)
    probe = make_probe("lda").fit(x, y)
    for layer in range(2):
        sk = LinearDiscriminantAnalysis(solver="svd").fit(x[layer].numpy(), y.numpy())
        ours = probe.weight_[layer].numpy()
        cos = ours @ sk.coef_[0] / np.linalg.norm(ours) / np.linalg.norm(sk.coef_[0])
        assert cos == pytest.approx(1.0, abs=1e-9)
    assert bool((accuracy(probe.score(x), y) > 0.8).all())


def _pooled_cov(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = len(y)
    s = np.zeros((x.shape[1], x.shape[1]))
    for k in (0, 1):
        xk = x[y == k]
        s += len(xk) * np.cov(xk, rowvar=False)
    return s / n


@pytest.mark.parametrize("n,f", [(30, 50), (200, 12)])
def test_lda_pinv_by_hand(n, f):
    x, y = _gauss(n=n, f=f, seed=4, shift=1.0)
    probe = make_probe("lda").fit(x, y)
    for layer in range(2):
        xn, yn = x[layer].numpy(), y.numpy().astype(int)
        s = _pooled_cov(xn, yn)
        delta = xn[yn == 1].mean(0) - xn[yn == 0].mean(0)
        want = np.linalg.pinv(s, rcond=f * np.finfo(np.float32).eps) @ delta
        got = probe.weight_[layer].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8 * np.abs(want).max())
    # the layers are solved in chunks that bound memory; one layer per chunk gives the same w (a batch of one
    # takes another BLAS kernel, so equal to float64 rounding, not bit for bit)
    one_by_one = make_probe("lda", max_chunk_bytes=1).fit(x, y)
    torch.testing.assert_close(one_by_one.weight_, probe.weight_, rtol=1e-12, atol=1e-12)


def test_lda_shrinkage_by_hand():
    x, y = _gauss(n=60, f=20, seed=5, shift=0.0)
    alpha = 0.3
    probe = make_probe("lda", shrinkage=alpha).fit(x, y)
    xn, yn = x[0].numpy(), y.numpy().astype(int)
    s = _pooled_cov(xn, yn)
    s = (1 - alpha) * s + alpha * np.trace(s) / 20 * np.eye(20)
    want = np.linalg.solve(s, xn[yn == 1].mean(0) - xn[yn == 0].mean(0))
    np.testing.assert_allclose(probe.weight_[0].numpy(), want, rtol=1e-8)
    auto = make_probe("lda", shrinkage="auto").fit(x, y)
    assert torch.isfinite(auto.score(x)).all()


@pytest.mark.parametrize("method", ["mean-diff", "lda", "mean-diff-on-pair"])
def test_save_load_identical(tmp_path, method):
    x, y = _gauss(n=80, f=6, seed=6)
    x = x.float()
    data = torch.stack([x, x * 0.5], dim=2) if method.endswith("pair") else x
    probe = make_probe(method).fit(data, y)
    probe.save(tmp_path / "p.safetensors")
    again = load_probe(tmp_path / "p.safetensors")
    assert torch.equal(again.score(data), probe.score(data))
    for key in ("direction", "bias", "scale", "offset", "weight"):
        assert torch.equal(getattr(again, key + "_"), getattr(probe, key + "_"))


@pytest.mark.parametrize("n,f", [(40, 30), (200, 12), (30, 50)])
def test_lda_pinv_rank_deficient_takes_the_exact_path(n, f, monkeypatch):
    """Low-rank features make S (and the Gram matrix beyond its two known null vectors) singular: the Cholesky
    certificate fails and the eigendecomposition path must reproduce numpy's pinv with the float32 cutoff."""
    x, y = _gauss(n=n, f=f, seed=7, shift=1.0)
    g = torch.Generator().manual_seed(8)
    x = x @ (torch.randn(f, 6, generator=g, dtype=x.dtype) @ torch.randn(6, f, generator=g, dtype=x.dtype))
    calls = []
    real_eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda m: calls.append(m.shape) or real_eigh(m))
    probe = make_probe("lda").fit(x, y)
    assert calls, "the rank-deficient case must use the eigendecomposition"
    for layer in range(2):
        xn, yn = x[layer].numpy(), y.numpy().astype(int)
        want = np.linalg.pinv(_pooled_cov(xn, yn), rcond=f * np.finfo(np.float32).eps) @ (
            xn[yn == 1].mean(0) - xn[yn == 0].mean(0)
        )
        np.testing.assert_allclose(
            probe.weight_[layer].numpy(), want, rtol=1e-5, atol=1e-7 * np.abs(want).max()
        )
