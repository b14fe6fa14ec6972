"""`lr` and `lr-on-pair` against scikit-learn's LogisticRegression with the same penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from quirky.probes import load_probe, make_probe
from quirky.probes.metrics import auroc


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS thread: these tiny problems are dominated by thread start-up on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(num_layers=3, n=240, f=24, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # anisotropic, off-centre features (like residual streams): scales from 0.1 to 30, mean 5
    scales = torch.logspace(-1, 1.5, f, dtype=torch.float64)
    x = torch.randn(num_layers, n, f, generator=g, dtype=torch.float64) * scales + 5.0
    w_true = torch.randn(f, generator=g, dtype=torch.float64) / scales
    logits = (x[0] - 5.0) @ w_true
    y = (logits + torch.randn(n, generator=g, dtype=torch.float64) * logits.std() > 0).to(torch.float64)
    return x.to(dtype), y


def _sklearn(x: np.ndarray, y: np.ndarray, l2: float):
    # ours: mean BCE + l2 ||w||^2   <=>   sklearn: C * sum BCE + ||w||^2 / 2   with C = 1 / (2 n l2)
    clf = LogisticRegression(C=1.0 / (2 * len(y) * l2), solver="newton-cholesky", tol=1e-12, max_iter=500)
    clf.fit(x, y)
    return clf.coef_[0], clf.intercept_[0]


@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_lr_matches_sklearn_float64(l2):
    x, y = _data()
    probe = make_probe("lr", l2=l2).fit(x, y)
    assert bool(probe.converged_.all())
    for layer in range(x.shape[0]):
        coef, intercept = _sklearn(x[layer].numpy(), y.numpy(), l2)
        np.testing.assert_allclose(
            probe.direction[layer].numpy(), coef, rtol=0, atol=2e-4 * np.abs(coef).max()
        )
        assert probe.bias[layer].item() == pytest.approx(intercept, abs=2e-3 * max(1.0, abs(intercept)))
    # scores are the log-odds of the fitted model
    scores = probe.score(x)
    manual = x @ probe.direction.unsqueeze(-1)
    torch.testing.assert_close(scores, manual.squeeze(-1) + probe.bias[:, None])


def test_lr_float32_agrees_with_float64():
    x, y = _data(seed=1)
    p64 = make_probe("lr").fit(x, y)
    p32 = make_probe("lr").fit(x.float(), y)
    rel = (p32.direction.double() - p64.direction).norm(dim=-1) / p64.direction.norm(dim=-1)
    assert float(rel.max()) < 5e-3
    a64, a32 = auroc(p64.score(x), y), auroc(p32.score(x.float()), y)
    assert torch.allclose(a64, a32, atol=2e-3)


def test_lr_on_pair_is_lr_on_concatenated_pair():
    x, y = _data(num_layers=2, n=200, f=12, seed=2)
    g = torch.Generator().manual_seed(5)
    pairs = torch.stack([x, x + torch.randn(x.shape, generator=g, dtype=x.dtype)], dim=2)  # [L, n, 2, f]
    p_pair = make_probe("lr-on-pair").fit(pairs, y)
    p_flat = make_probe("lr").fit(torch.cat([pairs[:, :, 0], pairs[:, :, 1]], dim=-1), y)
    assert p_pair.direction.shape == (2, 24)
    torch.testing.assert_close(p_pair.direction, p_flat.direction, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(
        p_pair.score(pairs), p_flat.score(torch.cat([pairs[:, :, 0], pairs[:, :, 1]], -1))
    )


def test_lr_save_load_identical(tmp_path):
    x, y = _data(num_layers=2, n=100, f=8, dtype=torch.float32)
    probe = make_probe("lr", l2=0.01).fit(x, y)
    probe.save(tmp_path / "lr.safetensors")
    again = load_probe(tmp_path / "lr.safetensors")
    assert again.get_params() == probe.get_params()
    assert torch.equal(again.score(x), probe.score(x))
