"""CCS, CRC, the LEACE normaliser and LDA's `shrinkage="auto"` against independent references written here.

Nothing in this file calls the code under test to build its expectations: the LEACE eraser is the formula of
Belrose et al. 2023 (arXiv 2306.03819) in NumPy, the CCS loss is the one of Burns et al. 2022 (arXiv 2212.03827)
written out, its reference solver is `torch.optim.LBFGS` on that loss, CRC's reference is a NumPy SVD, and LDA's
references are scikit-learn and the shrinkage formula in NumPy.  The probes are fitted in float64 so that the
tolerances can be tight enough for a wrong formula to show.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from quirky.probes import make_probe
from quirky.probes._contrast import erase, fit_pair_eraser
from quirky.probes.ccs import ccs_loss

WEIGHT_DECAY = 0.01  # CCS's default, as in the original's CcsConfig(weight_decay=0.01)
SVD_TOL = 0.01  # concept-erasure's LeaceFitter default, which the original (and quirky) use


pytestmark = pytest.mark.usefixtures("one_blas_thread")


# ---- data --------------------------------------------------------------------------------------------------


def planted_pairs(
    n: int,
    d: int,
    *,
    strength: float = 1.0,
    noise: float = 0.7,
    truth_seed: int = 0,
    seed: int = 1,
    y: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contrast pairs [n, 2, d] (float64) whose label information lies along `truth` only.

    The side holding the true answer is pushed along +truth and the other along -truth; on top, a per-side
    offset whose size varies by example (so that the raw pair differences vary most along it and only LEACE
    removes it), a shared per-example state and independent noise.  `truth_seed` fixes truth and the offset, so
    two calls with different `seed` give a training and a test set of the same population; `y` fixes the labels
    (another layer of the same examples)."""
    gt = torch.Generator().manual_seed(truth_seed)
    truth = torch.randn(d, generator=gt, dtype=torch.float64)
    truth /= truth.norm()
    offset = 3.0 * torch.randn(d, generator=gt, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    if y is None:
        y = (torch.rand(n, generator=g) < 0.5).double()
    shared = torch.randn(n, 1, d, generator=g, dtype=torch.float64) + 2.0
    correct = torch.stack([1 - y, y], dim=1)  # [n, 2]: does this side hold the true answer?
    push = (2 * correct - 1)[:, :, None] * strength * truth
    size = 1.0 + 0.5 * torch.randn(n, 1, 1, generator=g, dtype=torch.float64)
    side = torch.tensor([-1.0, 1.0], dtype=torch.float64)[None, :, None] * size * offset
    x = shared + push + side + noise * torch.randn(n, 2, d, generator=g, dtype=torch.float64)
    return x, y, truth


# ---- LEACE (Belrose et al. 2023), written from the paper --------------------------------------------------


def leace_reference(neg: np.ndarray, pos: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The eraser that CCS and CRC normalise with: LEACE for the concept z = side of the pair, one-hot
    z = [0, 1] for x_neg and [1, 0] for x_pos, fitted on the 2n stacked states.

    r(x) = x - W^+ U U^T W (x - mean), W = Sigma^-1/2, U = the left singular vectors of W Sigma_xz with singular
    value above SVD_TOL.  Sigma is the covariance with the linear shrinkage that concept-erasure's LeaceFitter
    applies by default: alpha S + (1 - alpha) tr(S)/d I with S the biased covariance and
    alpha = 1 - (tr(S)^2 / N) / (||S||_F^2 - tr(S)^2 / d); Sigma_xz uses N - 1.  (The fitter's trace constraint is
    asserted not to apply to the data used here.)
    """
    x = np.concatenate([neg, pos])
    big_n, d = x.shape
    z = np.concatenate([np.tile([0.0, 1.0], (len(neg), 1)), np.tile([1.0, 0.0], (len(pos), 1))])
    mean = x.mean(axis=0)
    xc = x - mean
    s = xc.T @ xc / big_n
    tr = np.trace(s)
    alpha = 1.0 - (tr * tr / big_n) / (np.sum(s * s) - tr * tr / d)
    sigma = alpha * s + (1.0 - alpha) * tr / d * np.eye(d)
    sigma_xz = xc.T @ (z - z.mean(axis=0)) / (big_n - 1)
    evals, vecs = np.linalg.eigh(sigma)
    w = vecs @ np.diag(evals**-0.5) @ vecs.T
    w_inv = vecs @ np.diag(evals**0.5) @ vecs.T
    u, sv, _ = np.linalg.svd(w @ sigma_xz, full_matrices=False)
    u = u[:, sv > SVD_TOL]
    q = w_inv @ u @ u.T @ w
    p = np.eye(d) - q
    assert np.trace(p @ sigma @ p.T) <= np.trace(sigma)  # the fitter's trace constraint stays inactive
    return lambda h: h - (h - mean) @ q.T


def erased_pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(e(x_neg), e(x_pos), e) for pairs x [n, 2, d] with the reference eraser fitted on x."""
    e = leace_reference(x[:, 0].numpy(), x[:, 1].numpy())

    def apply(h: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(e(h.numpy()))

    return apply(x[:, 0]), apply(x[:, 1]), apply


# ---- CCS (Burns et al. 2022), written out -----------------------------------------------------------------


def ccs_reference_loss(z_neg: torch.Tensor, z_pos: torch.Tensor) -> torch.Tensor:
    """mean (p+ - (1 - p-))^2 + mean min(p+, p-)^2 for the logits of the two sides."""
    p_neg, p_pos = torch.sigmoid(z_neg), torch.sigmoid(z_pos)
    consistency = (p_pos - (1.0 - p_neg)) ** 2
    confidence = torch.minimum(p_pos, p_neg) ** 2
    return consistency.mean() + confidence.mean()


def ccs_reference_fit(
    neg: torch.Tensor, pos: torch.Tensor, restarts: int = 3
) -> tuple[float, float, torch.Tensor]:
    """The original's solver on erased sides: per restart one `torch.optim.LBFGS` (strong Wolfe) run on
    loss + WEIGHT_DECAY/2 (||w||^2 + b^2), keeping the lowest unregularised loss.

    Returns (loss, regularised objective, w) of the kept restart."""
    d = neg.shape[1]
    g = torch.Generator().manual_seed(0)
    best: tuple[float, float, torch.Tensor] | None = None
    for _ in range(restarts):
        w = ((torch.rand(d, generator=g, dtype=torch.float64) * 2 - 1) / d**0.5).requires_grad_()
        b = ((torch.rand(1, generator=g, dtype=torch.float64) * 2 - 1) / d**0.5).requires_grad_()
        opt = torch.optim.LBFGS(
            [w, b],
            line_search_fn="strong_wolfe",
            max_iter=1000,
            history_size=100,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
        )

        def closure(opt=opt, w=w, b=b) -> torch.Tensor:
            opt.zero_grad()
            f = ccs_reference_loss(neg @ w + b, pos @ w + b) + WEIGHT_DECAY / 2 * (w @ w + b @ b)
            f.backward()
            return f

        opt.step(closure)
        with torch.no_grad():
            loss = float(ccs_reference_loss(neg @ w + b, pos @ w + b))
            objective = loss + WEIGHT_DECAY / 2 * float(w @ w + b @ b)
        if best is None or loss < best[0]:
            best = (loss, objective, w.detach().clone())
    assert best is not None
    return best


def test_ccs_loss_function_is_burns_loss():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(5, 40, 2, 3, generator=g, dtype=torch.float64)  # [..., n, 2, R]
    ours = ccs_loss(logits)
    for i in range(5):
        for r in range(3):
            ref = ccs_reference_loss(logits[i, :, 0, r], logits[i, :, 1, r])
            torch.testing.assert_close(ours[i, r], ref, rtol=1e-12, atol=1e-14)


def test_ccs_reaches_the_reference_optimum_and_its_auroc():
    """Per layer, the fitted probe's (w, b) on the reference-erased sides is no worse than what torch's LBFGS
    finds for the written-out loss, both unregularised and regularised, points the same way, and gives the same
    test AUROC; its stored train loss is the written-out loss at its own (w, b)."""
    x0, y, _ = planted_pairs(150, 10, seed=1)
    x = torch.stack([x0, planted_pairs(150, 10, seed=2, y=y)[0]])  # two layers of the same examples
    probe = make_probe("ccs").fit(x, y)
    x_test, y_test, _ = planted_pairs(400, 10, seed=9)
    for layer in range(2):
        neg, pos, e = erased_pair(x[layer])
        loss_ref, objective_ref, w_ref = ccs_reference_fit(neg, pos)
        w, b = probe.weight_[layer], probe.weight_bias_[layer]
        loss = float(ccs_reference_loss(neg @ w + b, pos @ w + b))
        objective = loss + WEIGHT_DECAY / 2 * float(w @ w + b * b)
        # CCS is not convex (min(p+, p-) has kinks): both solvers stop at stationary points, which on these data
        # can be distinct neighbouring minima ~1e-5 apart; a wrong loss or gradient costs far more than that
        assert loss <= loss_ref * (1 + 1e-4), (layer, loss, loss_ref)
        assert objective <= objective_ref * (1 + 1e-4), (layer, objective, objective_ref)
        assert float(probe.train_loss_[layer]) == pytest.approx(loss, abs=1e-7)
        assert abs(float(w @ w_ref)) / float(w.norm() * w_ref.norm()) > 0.999
        # reference scores: w_ref . (e(h_pos) - e(h_neg)), sign resolved on the training labels
        sign = 1.0 if roc_auc_score(y.numpy(), ((pos - neg) @ w_ref).numpy()) > 0.5 else -1.0
        ref_scores = sign * ((e(x_test[:, 1]) - e(x_test[:, 0])) @ w_ref)
        auc_ref = roc_auc_score(y_test.numpy(), ref_scores.numpy())
        auc = roc_auc_score(y_test.numpy(), probe.score(x_test.expand(2, -1, -1, -1))[layer].numpy())
        assert auc_ref > 0.95
        assert auc == pytest.approx(auc_ref, abs=2e-3)


# ---- CRC (Burns et al. 2022's CRC-TPC): the top principal component of the pair differences -------------------


def test_crc_direction_is_the_top_singular_vector_of_erased_differences():
    x, y, truth = planted_pairs(200, 12, seed=3)
    x2, _, _ = planted_pairs(200, 12, truth_seed=5, seed=4, y=y)  # another layer: other truth and offset
    probe = make_probe("crc").fit(torch.stack([x, x2]), y)
    x_test, y_test, _ = planted_pairs(300, 12, seed=8)
    for layer, xl in enumerate((x, x2)):
        neg, pos, e = erased_pair(xl)
        diffs = (pos - neg).numpy()
        _, sv, vt = np.linalg.svd(diffs - diffs.mean(axis=0), full_matrices=False)
        assert sv[0] > 1.5 * sv[1]  # a well-separated top component
        top = vt[0]
        w = probe.weight_[layer].numpy()
        assert abs(w @ top) / np.linalg.norm(w) > 1 - 1e-8
        # the scores are a positive multiple of top . (e(h_pos) - e(h_neg)) with the sign the labels choose
        sign = 1.0 if roc_auc_score(y.numpy(), diffs @ top) > 0.5 else -1.0
        if layer == 1:
            continue  # a different population: the test set below belongs to layer 0's
        ref = sign * ((e(x_test[:, 1]) - e(x_test[:, 0])).numpy() @ top)
        ours = probe.score(torch.stack([x_test, x_test]))[layer].numpy()
        assert np.corrcoef(ours, ref)[0, 1] > 1 - 1e-8
        assert roc_auc_score(y_test.numpy(), ours) > 0.95
    # the raw differences' top component is the per-side offset, not the truth: the erasure is what matters here
    raw = (x[:, 1] - x[:, 0]).numpy()
    raw_top = np.linalg.svd(raw - raw.mean(axis=0), full_matrices=False)[2][0]
    assert abs(raw_top @ truth.numpy()) < 0.5


# ---- LEACE properties, in the style of concept-erasure's tests ------------------------------------------------


@pytest.mark.parametrize(("n", "d", "seed"), [(60, 5, 0), (200, 16, 1), (40, 30, 2)])
def test_erased_pairs_carry_no_linear_information_about_the_side(n, d, seed):
    """After the eraser fitted by `fit_pair_eraser`, the side of the pair is linearly unpredictable from the
    states: zero cross-covariance, equal side means and zero least-squares coefficients; the erasure is an
    affine projection (idempotent) that moves states along a single direction, and it is the LEACE of the paper.
    """
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)  # anisotropic, correlated features
    x = torch.randn(1, n, 2, d, generator=g, dtype=torch.float64) @ mix
    x[:, :, 1] += 2.0 * torch.randn(d, generator=g, dtype=torch.float64)  # the sides differ
    x[:, :, 1] *= 1.0 + 0.3 * torch.rand(d, generator=g, dtype=torch.float64)
    eraser = fit_pair_eraser(x)
    flat = x.reshape(1, 2 * n, d)
    erased = erase(flat, eraser)[0].numpy()
    side = np.tile([0.0, 1.0], n)  # rows alternate neg, pos
    xr = flat[0].numpy()
    cov_before = (xr - xr.mean(0)).T @ (side - side.mean())
    cov_after = (erased - erased.mean(0)).T @ (side - side.mean())
    assert np.abs(cov_before).max() > 1.0
    assert np.abs(cov_after).max() < 1e-9 * np.abs(cov_before).max()
    np.testing.assert_allclose(erased[0::2].mean(0), erased[1::2].mean(0), atol=1e-9)
    # the best affine predictor of the side (least squares) and a logistic regression predict a constant 1/2
    design = np.column_stack([np.ones(2 * n), erased])
    coef = np.linalg.lstsq(design, side, rcond=None)[0]
    np.testing.assert_allclose(design @ coef, 0.5, atol=1e-8)
    clf = LogisticRegression(C=1e4, tol=1e-10, max_iter=10_000).fit(erased, side)
    np.testing.assert_allclose(clf.predict_proba(erased)[:, 1], 0.5, atol=1e-4)
    again = erase(torch.from_numpy(erased)[None], eraser)[0].numpy()
    np.testing.assert_allclose(again, erased, atol=1e-9)
    moved = erased - xr
    assert np.linalg.svd(moved, compute_uv=False)[1] < 1e-9 * np.linalg.norm(moved)
    ref = leace_reference(x[0, :, 0].numpy(), x[0, :, 1].numpy())
    np.testing.assert_allclose(erased, ref(xr), atol=1e-8 * np.abs(xr).max())


# ---- LDA with shrinkage="auto" ------------------------------------------------------------------------------


def _gaussian_classes(
    n: int, f: int, *, mean_scale: float = 0.3, seed: int = 0, sample_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated Gaussian classes [1, n, f] (float64) with unit-variance features and different means,
    labels [n] (1/3 positive); `seed` fixes the population, `sample_seed` the draw."""
    gp = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 3 == 0).double()
    mix = torch.randn(f, f, generator=gp, dtype=torch.float64) / f**0.5 + torch.eye(f, dtype=torch.float64)
    mix = mix / mix.norm(dim=0)
    mu = mean_scale * torch.randn(f, generator=gp, dtype=torch.float64)
    g = torch.Generator().manual_seed(1000 + sample_seed)
    x = torch.randn(n, f, generator=g, dtype=torch.float64) @ mix + y[:, None] * mu + 5.0
    return x[None], y


class _SharedLinearShrinkage:
    """A scikit-learn covariance estimator: the unbiased class covariance S_k shrunk as
    alpha S_k + (1 - alpha) tr(S_k)/f I with one alpha for all classes.  LinearDiscriminantAnalysis averages the
    class estimates with weights n_k / n, so its within-class covariance becomes alpha S + (1 - alpha) tr(S)/f I
    for the pooled S = (n_0 S_0 + n_1 S_1) / n: shrinkage of the pooled covariance, what quirky's LDA does."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def fit(self, x: np.ndarray) -> _SharedLinearShrinkage:
        s = np.cov(x, rowvar=False)
        f = s.shape[0]
        self.covariance_ = self.alpha * s + (1 - self.alpha) * np.trace(s) / f * np.eye(f)
        return self


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_lda_auto_shrinkage_is_the_shrunk_pooled_covariance_solve():
    """w is parallel to (alpha S + (1 - alpha) tr(S)/f I)^-1 (mu_1 - mu_0) with S the pooled within-class
    covariance (unbiased class covariances) and alpha the optimal linear shrinkage of concept-erasure (Chen et al.
    2013, arXiv 1308.2608), alpha = 1 - (tr(S)^2 / n) / (||S||_F^2 - tr(S)^2 / f), computed here in NumPy and
    solved by scikit-learn's lsqr LDA; in a regime (n = 2f) where shrinkage changes the direction a lot."""
    x, y = _gaussian_classes(60, 30)
    probe = make_probe("lda", shrinkage="auto").fit(x, y)
    xn, yn = x[0].numpy(), y.numpy()
    n, f = xn.shape
    x0, x1 = xn[yn == 0], xn[yn == 1]
    s = (len(x0) * np.cov(x0, rowvar=False) + len(x1) * np.cov(x1, rowvar=False)) / n
    tr = np.trace(s)
    alpha = 1.0 - (tr * tr / n) / (np.sum(s * s) - tr * tr / f)
    assert 0.1 < alpha < 0.9
    sk = LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=_SharedLinearShrinkage(alpha)).fit(
        xn, yn
    )
    ref = sk.coef_[0]
    w = probe.weight_[0].numpy()
    assert _cos(w, ref) > 1 - 1e-10
    unshrunk = np.linalg.lstsq(s, x1.mean(0) - x0.mean(0), rcond=None)[0]
    assert abs(_cos(unshrunk, ref)) < 0.95  # the shrinkage matters here
    # the scores rank like the reference discriminant (sign resolved on the labels)
    assert spearmanr(probe.score(x)[0].numpy(), sk.decision_function(xn)).statistic > 1 - 1e-9


def test_lda_auto_shrinkage_agrees_with_sklearn_lsqr_auto():
    """scikit-learn's LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto") shrinks each class covariance
    (Ledoit-Wolf, towards its diagonal) instead of the pooled one (concept-erasure's estimator, towards the
    isotropic matrix): not the same numbers, but with n >> f the directions are parallel and held-out data are
    ranked alike."""
    x, y = _gaussian_classes(3000, 8, mean_scale=0.5, seed=1)
    x_test, y_test = _gaussian_classes(1500, 8, mean_scale=0.5, seed=1, sample_seed=1)
    probe = make_probe("lda", shrinkage="auto").fit(x, y)
    sk = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x[0].numpy(), y.numpy())
    assert _cos(probe.weight_[0].numpy(), sk.coef_[0]) > 0.999
    ours = probe.score(x_test)[0].numpy()
    theirs = sk.decision_function(x_test[0].numpy())
    assert spearmanr(ours, theirs).statistic > 0.999
    auc, auc_ref = roc_auc_score(y_test.numpy(), ours), roc_auc_score(y_test.numpy(), theirs)
    assert auc_ref > 0.8
    assert auc == pytest.approx(auc_ref, abs=3e-3)
