"""CCS and CRC: recover a planted truth direction in synthetic contrast pairs; the LEACE normaliser equals
concept-erasure's; CCS reaches the loss of the reference's per-layer LBFGS loop."""

from __future__ import annotations

import pytest
import torch
from concept_erasure import LeaceFitter

from quirky.probes import load_probe, make_probe
from quirky.probes._contrast import _closed_form_eraser, erase, fit_pair_eraser
from quirky.probes.ccs import ccs_loss
from quirky.probes.metrics import auroc


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS thread: these tiny problems are dominated by thread start-up on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def planted_pairs(num_layers=2, n=300, d=24, seed=0, strength=1.0):
    """Pairs whose only label-related structure is `truth`: the side with the correct answer is pushed along
    +truth, the other along -truth; plus a large per-side offset (erased by LEACE) and noise.

    The example-level noise shared by both sides is isotropic: with anisotropic shared noise, the CCS optimum
    (consistency wants w orthogonal to high-variance shared directions) is a tilted, equally separating direction.
    """
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(d, generator=g)
    truth /= truth.norm()
    y = (torch.rand(n, generator=g) < 0.5).float()
    base = torch.randn(num_layers, n, 1, d, generator=g) + 2.0
    side_offset = torch.randn(d, generator=g) * 3.0
    correct = torch.stack([1 - y, y], dim=1)  # [n, 2]: is this side's answer the true one?
    push = (2 * correct - 1)[None, :, :, None] * strength * truth
    side = torch.tensor([-1.0, 1.0])[None, None, :, None] * side_offset
    noise = 0.3 * torch.randn(num_layers, n, 2, d, generator=g)
    return base + push + side + noise, y, truth


@pytest.mark.parametrize("method", ["ccs", "crc"])
def test_recovers_planted_truth(method):
    x, y, truth = planted_pairs()
    probe = make_probe(method).fit(x, y)
    direction = probe.direction / probe.direction.norm(dim=-1, keepdim=True)
    cos = direction @ truth
    assert bool((cos > 0.9).all()), cos  # right direction *and* right sign (resolved by the labels)
    xt, yt, _ = planted_pairs(seed=0, n=200)  # same truth (same seed), new examples
    assert bool((auroc(probe.score(xt[:, :200]), yt[:200]) > 0.97).all())


def test_closed_form_leace_equals_concept_erasure():
    x, _, _ = planted_pairs(num_layers=1, n=150, d=12, seed=1)
    n, d = 150, 12
    fitter = LeaceFitter(d, 2, dtype=torch.float32)
    fitter.update(x[0, :, 0], torch.tensor([0.0, 1.0]).expand(n, 2))
    fitter.update(x[0, :, 1], torch.tensor([1.0, 0.0]).expand(n, 2))
    left, right = _closed_form_eraser(fitter)
    eye = torch.eye(d, dtype=torch.float64)
    p_ours = eye - left @ right
    ref = fitter.eraser
    p_ref = eye - ref.proj_left.double() @ ref.proj_right.double()
    torch.testing.assert_close(p_ours, p_ref, atol=2e-5, rtol=0)
    # and the stacked per-layer eraser applies it: the two sides have equal means afterwards
    eraser = fit_pair_eraser(x)
    e_neg = erase(x[:, :, 0], eraser)
    e_pos = erase(x[:, :, 1], eraser)
    gap = (e_pos.mean(1) - e_neg.mean(1)).norm() / (x[:, :, 1].mean(1) - x[:, :, 0].mean(1)).norm()
    assert gap < 1e-4
    torch.testing.assert_close(e_neg[0], ref(x[0, :, 0]), atol=1e-4, rtol=1e-4)


def _reference_ccs_loss(x: torch.Tensor, restarts: int = 10, max_iter: int = 300) -> float:
    """The reference's loop for one layer: LEACE, then per restart one torch LBFGS run on loss + wd/2 ||theta||^2,
    keeping the lowest unregularised loss."""
    d = x.shape[-1]
    eraser = fit_pair_eraser(x[None])
    neg, pos = erase(x[None, :, 0], eraser)[0], erase(x[None, :, 1], eraser)[0]
    torch.manual_seed(0)
    best = float("inf")
    for _ in range(restarts):
        lin = torch.nn.Linear(d, 1)
        opt = torch.optim.LBFGS(
            lin.parameters(),
            line_search_fn="strong_wolfe",
            max_iter=max_iter,
            tolerance_change=torch.finfo(torch.float32).eps,
            tolerance_grad=torch.finfo(torch.float32).eps,
        )

        def closure(opt=opt, lin=lin):
            opt.zero_grad()
            logits = torch.stack([lin(neg), lin(pos)], dim=1)  # [n, 2, 1]
            loss = ccs_loss(logits).sum() + sum(0.01 * p.norm() ** 2 / 2 for p in lin.parameters())
            loss.backward()
            return float(loss.detach())

        opt.step(closure)
        with torch.no_grad():
            final = float(ccs_loss(torch.stack([lin(neg), lin(pos)], dim=1)).sum())
        best = min(best, final)
    return best


def test_ccs_reaches_reference_loss():
    x, y, _ = planted_pairs(num_layers=2, n=200, d=16, seed=2, strength=0.6)
    probe = make_probe("ccs").fit(x, y)
    for layer in range(2):
        ref = _reference_ccs_loss(x[layer])
        assert probe.train_loss_[layer].item() <= ref + 1e-3


@pytest.mark.parametrize("method", ["ccs", "crc"])
def test_save_load_identical_and_direction_is_input_space(tmp_path, method):
    x, y, _ = planted_pairs(n=120, d=10, seed=3)
    probe = make_probe(method, seed=1).fit(x, y)
    probe.save(tmp_path / "p.safetensors")
    again = load_probe(tmp_path / "p.safetensors")
    assert torch.equal(again.score(x), probe.score(x))
    # score = a * w . (e(h_pos) - e(h_neg)) = direction . (h_pos - h_neg)
    eraser = probe.eraser
    diff = erase(x[:, :, 1], eraser) - erase(x[:, :, 0], eraser)
    manual = probe.scale_[:, None] * (diff @ probe.weight_.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(probe.score(x), manual, atol=1e-4, rtol=1e-4)


def test_ccs_deterministic_given_seed():
    x, y, _ = planted_pairs(n=100, d=8, seed=4)
    a = make_probe("ccs", seed=3).fit(x, y).score(x)
    b = make_probe("ccs", seed=3).fit(x, y).score(x)
    assert torch.equal(a, b)


def test_ccs_objective_gradient_and_restart_compaction():
    """The analytic gradient matches autograd of loss(logits(v)), and computing only the running restarts
    (a stopped restart drops out of the products) gives the same logits and gradient on the running ones."""
    from quirky.probes.ccs import _CcsObjective
    from quirky.probes.optim import active_columns, spectral_preconditioner

    x, _, _ = planted_pairs(num_layers=3, n=40, d=6, seed=5)
    x = x.double()
    num_layers, n, _, d = x.shape
    r = 4
    flat = x.reshape(num_layers, 2 * n, d)
    var, mean = torch.var_mean(flat, dim=1, unbiased=False)
    pre = spectral_preconditioner(flat, mean, var, curvature=0.25, ridge=0.01, rank=0)
    obj = _CcsObjective(flat, n, r, fit_pair_eraser(x), pre, 0.5, 0.01)
    v = torch.randn(num_layers * r, d + 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    everyone = torch.ones(num_layers * r, dtype=torch.bool)

    def f_of(vv):
        return obj.loss(obj.logits(vv, everyone)[:, None], vv[:, None], everyone).sum()

    vg = v.clone().requires_grad_(True)
    f_of(vg).backward()
    z = obj.logits(v, everyone)
    torch.testing.assert_close(obj.gradient(v, z, everyone), vg.grad)

    need = torch.zeros(num_layers, r, dtype=torch.bool)
    need[0, [1, 3]] = True
    need[2, 2] = True  # layer 1: nothing runs
    assert active_columns(need).shape == (num_layers, 2)
    assert active_columns(torch.ones(num_layers, r, dtype=torch.bool)) is None
    need = need.flatten()
    torch.testing.assert_close(obj.logits(v, need)[need], obj.logits(v, everyone)[need])
    torch.testing.assert_close(obj.gradient(v, z, need)[need], vg.grad[need])
