"""The batched L-BFGS of `quirky.probes.optim` against plain solvers on random strictly convex problems.

Each problem of a batch has one minimiser, which the batched solver must reach whatever step sizes it tries,
however much history it keeps and whenever it drops converged problems from the batch: L2-penalised logistic
regression against Newton's method (exact to rounding) and the plain L-BFGS of scipy and of torch, ridge least
squares against the closed form.
The references get their objective written out here, not from the batched objective handed to `lbfgs`.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.optimize
import torch

from quirky.probes.ccs import CCS_STEPS
from quirky.probes.lr import LR_STEPS
from quirky.probes.optim import lbfgs

pytestmark = pytest.mark.usefixtures("one_blas_thread")

B, N, P = 10, 80, 7  # problems per batch, examples, parameters


def _features(seed: int) -> torch.Tensor:
    """[B, N, P] features with column scales spread over up to 3 orders of magnitude, more for later problems
    (so problems converge at different iterations and the solver compacts its batch), last column constant."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.arange(B, dtype=torch.float64)[:, None] / (B - 1)
    scale = torch.logspace(0, 3, P - 1, dtype=torch.float64)[None, :] ** spread  # [B, P-1]
    mix = 0.3 * torch.randn(B, P - 1, P - 1, generator=g, dtype=torch.float64) + torch.eye(P - 1)
    x = (torch.randn(B, N, P - 1, generator=g, dtype=torch.float64) @ mix) * scale[:, None, :] / 10
    return torch.cat([x, torch.ones(B, N, 1, dtype=torch.float64)], dim=-1)


class _BatchedLinear:
    """The `optim.Objective` of B linear models z_b = A_b x_b with loss `data(z, target)` + lam_b/2 ||x_b||^2."""

    def __init__(self, a, target, lam, data, data_grad) -> None:
        self.a, self.target, self.lam, self.data, self.data_grad = a, target, lam, data, data_grad

    def logits(self, x, need):
        return (self.a @ x.unsqueeze(-1)).squeeze(-1)

    def loss(self, z, x, need):  # z [B, m, N], x [B, m, P]
        return self.data(z, self.target.unsqueeze(1)) + self.lam[:, None] / 2 * (x * x).sum(-1)

    def gradient(self, x, z, need):
        torch.testing.assert_close(
            z[need], self.logits(x, need)[need]
        )  # the solver's cached logits are exact
        return (self.a.mT @ self.data_grad(z, self.target).unsqueeze(-1)).squeeze(-1) + self.lam[:, None] * x


def _logistic(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, _BatchedLinear]:
    """(A, y, lam, objective) of B L2-penalised logistic regressions with labels drawn from a random model."""
    a = _features(seed)
    g = torch.Generator().manual_seed(seed + 1)
    truth = torch.randn(B, P, generator=g, dtype=torch.float64)
    prob = torch.sigmoid((a @ truth.unsqueeze(-1)).squeeze(-1))
    y = (torch.rand(B, N, generator=g, dtype=torch.float64) < prob).double()
    lam = torch.logspace(-3, -1, B, dtype=torch.float64)
    obj = _BatchedLinear(
        a,
        y,
        lam,
        lambda z, t: (torch.nn.functional.softplus(z) - t * z).mean(-1),
        lambda z, t: (torch.sigmoid(z) - t) / z.shape[-1],
    )
    return a, y, lam, obj


def _logistic_f(x: np.ndarray, a: np.ndarray, y: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    """mean over examples of -log p(y | a x) + lam/2 ||x||^2 and its gradient, in NumPy."""
    z = a @ x
    f = np.mean(np.logaddexp(0.0, z) - y * z) + lam / 2 * x @ x
    grad = a.T @ (1.0 / (1.0 + np.exp(-z)) - y) / len(y) + lam * x
    return float(f), grad


def _newton_logistic(a: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> np.ndarray:
    """Per problem, Newton's method on `_logistic_f` (quadratic convergence: the minimiser to rounding)."""
    out = []
    for i in range(B):
        an, yn, li = a[i].numpy(), y[i].numpy(), float(lam[i])
        x = np.zeros(P)
        for _ in range(50):
            _, grad = _logistic_f(x, an, yn, li)
            p = 1.0 / (1.0 + np.exp(-(an @ x)))
            hess = (an.T * (p * (1 - p))) @ an / N + li * np.eye(P)
            x = x - np.linalg.solve(hess, grad)
        assert np.abs(_logistic_f(x, an, yn, li)[1]).max() < 1e-14
        out.append(x)
    return np.stack(out)


def _scipy_logistic(a: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> np.ndarray:
    out = []
    for i in range(B):
        res = scipy.optimize.minimize(
            _logistic_f,
            np.zeros(P),
            args=(a[i].numpy(), y[i].numpy(), float(lam[i])),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 20_000, "gtol": 1e-12, "ftol": 1e-16},
        )
        out.append(res.x)
    return np.stack(out)


def _torch_logistic(a: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> np.ndarray:
    out = []
    for i in range(B):
        x = torch.zeros(P, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [x], line_search_fn="strong_wolfe", max_iter=5000, tolerance_grad=1e-12, tolerance_change=1e-16
        )

        def closure(opt=opt, x=x, i=i) -> torch.Tensor:
            opt.zero_grad()
            z = a[i] @ x
            f = torch.nn.functional.binary_cross_entropy_with_logits(z, y[i]) + lam[i] / 2 * (x @ x)
            f.backward()
            return f

        opt.step(closure)
        out.append(x.detach().numpy())
    return np.stack(out)


@functools.cache
def _logistic_references(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Newton's, scipy's, torch's) minimisers of `_logistic(seed)`, computed once per test session."""
    a, y, lam, _ = _logistic(seed)
    return _newton_logistic(a, y, lam), _scipy_logistic(a, y, lam), _torch_logistic(a, y, lam)


def _values(x: np.ndarray, a: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> np.ndarray:
    return np.array([_logistic_f(x[i], a[i].numpy(), y[i].numpy(), float(lam[i]))[0] for i in range(B)])


@pytest.mark.parametrize(
    ("steps", "history"), [((1.0,), None), (LR_STEPS, None), (CCS_STEPS, None), (LR_STEPS, 3)]
)
def test_lbfgs_reaches_the_logistic_regression_optimum(steps, history):
    """The minimiser to ~1e-7 (Newton's), and an objective no higher than scipy's or torch's L-BFGS reach."""
    a, y, lam, obj = _logistic(seed=0)
    res = lbfgs(
        obj, torch.zeros(B, P, dtype=torch.float64), steps=steps, history=history, gtol=1e-10, ftol=0.0
    )
    assert bool(res.converged.all())
    assert res.n_iter.min() < res.n_iter.max()  # some problems left the batch early
    exact, x_scipy, x_torch = _logistic_references(0)
    np.testing.assert_allclose(res.x.numpy(), exact, rtol=0, atol=1e-6 * np.abs(exact).max())
    ours = _values(res.x.numpy(), a, y, lam)
    for plain in (x_scipy, x_torch):
        assert bool((ours <= _values(plain, a, y, lam) + 1e-14).all())


def test_lbfgs_default_tolerances_reach_the_logistic_regression_minimum_value():
    """With the probes' stopping rules (relative ftol 1e-10, and the plateau window CCS uses), the objective is
    the minimum to ~1e-8 relative, although the minimiser's flat directions are less sharply determined."""
    a, y, lam, obj = _logistic(seed=1)
    res = lbfgs(obj, torch.zeros(B, P, dtype=torch.float64), steps=LR_STEPS, wtol=1e-9)
    f_ref = _values(_newton_logistic(a, y, lam), a, y, lam)
    np.testing.assert_allclose(_values(res.x.numpy(), a, y, lam), f_ref, rtol=2e-8, atol=0)


@pytest.mark.parametrize(("steps", "history"), [((1.0,), None), (CCS_STEPS, 5)])
def test_lbfgs_reaches_the_ridge_least_squares_solution(steps, history):
    """min f(x) = 1/(2N) ||A x - t||^2 + lam/2 ||x||^2 is x* = (A^T A / N + lam I)^-1 A^T t / N.  A is
    ill-conditioned, so with a short history the solver stops on numerical stagnation rather than on its gradient
    test; f(x) - f(x*) = 1/2 ||x - x*||_H^2 with H the Hessian, so the bound on f bounds the distance to x*."""
    a = _features(seed=2)
    g = torch.Generator().manual_seed(3)
    t = torch.randn(B, N, generator=g, dtype=torch.float64)
    lam = torch.logspace(-4, 0, B, dtype=torch.float64)
    obj = _BatchedLinear(a, t, lam, lambda z, tt: 0.5 * ((z - tt) ** 2).mean(-1), lambda z, tt: (z - tt) / N)
    res = lbfgs(
        obj, torch.zeros(B, P, dtype=torch.float64), steps=steps, history=history, gtol=1e-12, ftol=0.0
    )
    assert bool(res.converged.all())
    for i in range(B):
        an, tn, li = a[i].numpy(), t[i].numpy(), float(lam[i])
        hess = an.T @ an / N + li * np.eye(P)
        exact = np.linalg.solve(hess, an.T @ tn / N)
        err = res.x[i].numpy() - exact
        f_exact = 0.5 * np.mean((an @ exact - tn) ** 2) + li / 2 * exact @ exact
        assert 0.5 * err @ hess @ err <= 1e-12 * f_exact
        np.testing.assert_allclose(res.x[i].numpy(), exact, rtol=0, atol=1e-5 * np.abs(exact).max())
