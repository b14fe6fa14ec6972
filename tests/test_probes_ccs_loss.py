"""The CCS loss is defined once (`ccs_from_probs`); its hand-written derivatives, of the loss in the logits and of
the whole batched objective in the optimiser's variables, are checked against finite differences by
`torch.autograd.gradcheck` in float64."""

from __future__ import annotations

import pytest
import torch

from quirky.probes._contrast import fit_pair_eraser
from quirky.probes.ccs import _CcsObjective, ccs_from_probs, ccs_logit_gradient, ccs_loss
from quirky.probes.optim import spectral_preconditioner

pytestmark = pytest.mark.usefixtures("one_blas_thread")


class _HandGradient(torch.autograd.Function):
    """f(z) = sum of `ccs_from_probs` over the batch, whose backward is the hand-written `ccs_logit_gradient`."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:  # z [B, n, 2]
        ctx.save_for_backward(z)
        p = torch.sigmoid(z)
        return ccs_from_probs(p[..., 0], p[..., 1]).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        p = torch.sigmoid(z)
        return grad * torch.stack(ccs_logit_gradient(p[..., 0], p[..., 1]), dim=-1)


def test_logit_gradient_is_the_derivative_of_the_loss():
    z = 2 * torch.randn(3, 11, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.autograd.gradcheck(_HandGradient.apply, (z.requires_grad_(True),))


def test_ccs_loss_is_the_one_definition_in_the_reference_layout():
    logits = torch.randn(4, 9, 2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = torch.sigmoid(logits)
    for r in range(3):
        torch.testing.assert_close(ccs_loss(logits)[:, r], ccs_from_probs(p[:, :, 0, r], p[:, :, 1, r]))


def test_objective_gradient_passes_gradcheck():
    """The chain rule through the eraser, the preconditioner and the bias scaling, on top of the logit gradient."""
    g = torch.Generator().manual_seed(2)
    num_layers, n, d, r = 2, 15, 4, 3
    x = torch.randn(num_layers, n, 2, d, generator=g, dtype=torch.float64)
    x[..., 1, :] += 0.5
    flat = x.reshape(num_layers, 2 * n, d)
    var, mean = torch.var_mean(flat, dim=1, unbiased=False)
    pre = spectral_preconditioner(flat, mean, var, curvature=0.25, ridge=0.01, rank=2)
    obj = _CcsObjective(flat, n, r, fit_pair_eraser(x), pre, 0.6, 0.01)
    everyone = torch.ones(num_layers * r, dtype=torch.bool)

    class Objective(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(v)
            return obj.loss(obj.logits(v, everyone)[:, None], v[:, None], everyone).sum()

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
            (v,) = ctx.saved_tensors
            return grad * obj.gradient(v, obj.logits(v, everyone), everyone)

    v = torch.randn(num_layers * r, d + 1, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(Objective.apply, (v.requires_grad_(True),))
