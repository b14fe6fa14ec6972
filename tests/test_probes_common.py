"""The shared interface: every method fits, scores, saves and reloads; the random baseline; bad input."""

from __future__ import annotations

import pytest
import torch

from quirky.errors import QuirkyError
from quirky.probes import METHODS, load_probe, make_probe
from quirky.probes.metrics import auroc


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS thread: these tiny problems are dominated by thread start-up on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(pair: bool, num_layers=3, n=120, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()
    signal = (2 * y - 1)[None, :, None] * torch.linspace(0.2, 2.0, num_layers)[:, None, None]
    x = torch.randn(num_layers, n, d, generator=g)
    x[..., 0] += signal[..., 0]
    if not pair:
        return x, y
    side = torch.stack([-x[..., :1], x[..., :1]], dim=2)
    pairs = x[:, :, None, :] + torch.cat([side, torch.zeros(num_layers, n, 2, d - 1)], -1)
    return pairs + 0.1 * torch.randn(pairs.shape, generator=g), y


@pytest.mark.parametrize("method", METHODS)
def test_every_method_fit_score_save_load(tmp_path, method):
    probe = make_probe(method)
    x, y = _data(probe.pair)
    probe.fit(x, y)
    scores = probe.score(x)
    expected = (3, probe.n_directions, 120) if method == "random" else (3, 120)
    assert tuple(scores.shape) == expected and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    if method != "random":
        # sign resolved on the training data: the informative last layer separates the classes upwards
        assert auroc(scores[-1], y) > 0.9
        assert probe.direction.shape[0] == 3 and probe.bias.shape == (3,)
    probe.save(tmp_path / f"{method}.safetensors", extra={"note": "test"})
    again = load_probe(tmp_path / f"{method}.safetensors")
    assert type(again) is type(probe) and again.get_params() == probe.get_params()
    assert torch.equal(again.score(x), scores)


def test_random_baseline_signs_and_reproducibility():
    x, y = _data(False, n=200)
    probe = make_probe("random", n_directions=300, seed=5).fit(x, y)
    train_auc = auroc(probe.score(x), y)  # [L, K]
    # every direction's sign was flipped to beat chance on the training data
    assert bool((train_auc >= 0.5).all())
    z1 = probe.directions(1, 8, torch.device("cpu"), torch.float32)
    z2 = make_probe("random", n_directions=300, seed=5).directions(1, 8, torch.device("cpu"), torch.float32)
    assert torch.equal(z1, z2)
    with pytest.raises(QuirkyError):
        _ = probe.direction


def test_float64_inputs_stay_float64():
    x, y = _data(False)
    scores = make_probe("mean-diff").fit(x.double(), y).score(x.double())
    assert scores.dtype == torch.float64


@pytest.mark.parametrize("method", ["lr", "ccs"])
def test_bad_inputs_raise_quirky_errors(method):
    probe = make_probe(method)
    x, y = _data(probe.pair)
    with pytest.raises(QuirkyError, match="single class"):
        make_probe(method).fit(x, torch.ones_like(y))
    bad = x.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(QuirkyError, match="NaN"):
        make_probe(method).fit(bad, y)
    with pytest.raises(QuirkyError, match="shape"):
        make_probe(method).fit(x[0], y)
    with pytest.raises(QuirkyError, match="labels must have shape"):
        make_probe(method).fit(x, y[:-1])
    with pytest.raises(QuirkyError, match="empty"):
        make_probe(method).fit(x[:, :0], y[:0])
    with pytest.raises(QuirkyError, match="fit"):
        make_probe(method).score(x)
    fitted = make_probe(method).fit(x, y)
    with pytest.raises(QuirkyError, match="layers"):
        fitted.score(x[:2])
    with pytest.raises(QuirkyError, match="features"):
        fitted.score(x[..., :4])
    with pytest.raises(QuirkyError, match="0/1"):
        make_probe(method).fit(x, y * 2)


def test_unknown_method_and_bad_file(tmp_path):
    with pytest.raises(QuirkyError, match="unknown probe method"):
        make_probe("svm")
    with pytest.raises(QuirkyError, match="bad hyperparameters"):
        make_probe("lr", nonsense=1)
    with pytest.raises(QuirkyError, match="no saved probe"):
        load_probe(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(QuirkyError):
        load_probe(tmp_path / "junk.safetensors")


def test_bmm_layers_computes_only_needed_layers():
    from quirky.probes.optim import bmm_layers

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, 3, generator=g), torch.randn(5, 3, 2, generator=g)
    need = torch.tensor([True, False, True, False, False])
    out = bmm_layers(a, b, need)
    full = torch.bmm(a, b)
    torch.testing.assert_close(out[need], full[need])
    assert torch.all(out[~need] == 0)
    torch.testing.assert_close(bmm_layers(a, b, torch.ones(5, dtype=torch.bool)), full)


def test_batched_lbfgs_solves_independent_problems_of_different_difficulty():
    """Quadratics whose conditioning differs by problem: they stop at different iterations (which exercises the
    active-set compaction) and each must reach its own minimiser."""
    from quirky.probes.optim import lbfgs

    g = torch.Generator().manual_seed(0)
    b, p = 40, 12
    target = torch.randn(b, p, generator=g, dtype=torch.float64)
    curv = torch.logspace(0, 3, p, dtype=torch.float64)[None, :] ** (torch.arange(b)[:, None] / b)

    class Quadratic:  # a linear model whose logits are x itself
        def logits(self, x, need):
            return x.clone()

        def loss(self, z, x, need):
            return 0.5 * (curv[:, None, :] * (z - target[:, None, :]) ** 2).sum(-1)

        def gradient(self, x, z, need):
            torch.testing.assert_close(z[need], x[need])  # the cached logits match a fresh pass
            return curv * (z - target)

    res = lbfgs(Quadratic(), torch.zeros(b, p, dtype=torch.float64), max_iter=500, gtol=1e-10, ftol=0.0)
    assert bool(res.converged.all())
    torch.testing.assert_close(res.x, target, atol=1e-8, rtol=0)
    assert res.n_iter.min() < res.n_iter.max()  # easy problems stopped earlier

    # compaction moves each running problem's curvature history with it: every problem takes exactly the
    # iterations and reaches exactly the point it reaches when solved alone (a batch of one never compacts)
    class Solo(Quadratic):  # problem i of the batch, on its own
        def __init__(self, i: int) -> None:
            self.t, self.c = target[i : i + 1], curv[i : i + 1]

        def loss(self, z, x, need):
            return 0.5 * (self.c[:, None, :] * (z - self.t[:, None, :]) ** 2).sum(-1)

        def gradient(self, x, z, need):
            return self.c * (z - self.t)

    for i in (0, b // 2, b - 1):
        alone = lbfgs(Solo(i), torch.zeros(1, p, dtype=torch.float64), max_iter=500, gtol=1e-10, ftol=0.0)
        assert int(alone.n_iter[0]) == int(res.n_iter[i])
        torch.testing.assert_close(alone.x[0], res.x[i], atol=1e-13, rtol=0)
