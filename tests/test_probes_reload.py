"""A saved and reloaded probe is a true copy: every hyperparameter, every fitted tensor and every score.

The hyperparameters are set away from their defaults, so an option that `save` dropped would come back as its
default and fail the comparison (LDA's `max_chunk_bytes` once did); the fitted attributes are compared by the
class's declaration, so a tensor left out of the file fails the load.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from safetensors.torch import save_file

from quirky.errors import QuirkyError
from quirky.probes import METHODS, load_probe, make_probe, probe_class
from quirky.probes.base import PROBE_FORMAT, Probe

pytestmark = pytest.mark.usefixtures("one_blas_thread")

#: every method's hyperparameters, each away from its default
OPTIONS: dict[str, dict[str, object]] = {
    "lr": {"l2": 0.01, "max_iter": 300, "gtol": 1e-5},
    "lr-on-pair": {"l2": 0.02, "max_iter": 200, "gtol": 1e-5},
    "mean-diff": {},
    "mean-diff-on-pair": {},
    "lda": {"shrinkage": 0.2, "max_chunk_bytes": 4096},
    "ccs": {
        "restarts": 3,
        "weight_decay": 0.02,
        "max_iter": 200,
        "gtol": 1e-5,
        "ftol": 1e-6,
        "wtol": 1e-5,
        "precond_rank": 2,
        "seed": 4,
    },
    "crc": {"oversample": 4, "niter": 5, "seed": 2},
    "random": {"n_directions": 20, "seed": 3},
}


def _data(pair: bool, num_layers: int = 2, n: int = 60, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(n) % 2).float()
    x = torch.randn(num_layers, n, d, generator=g)
    x[..., 0] += 1.5 * (2 * y - 1)
    if pair:
        x = torch.stack([x - 0.5 * x[..., :1], x + 0.5 * x[..., :1]], dim=2)
        x = x + 0.1 * torch.randn(x.shape, generator=g)
    return x, y


def assert_same_probe(again: Probe, probe: Probe) -> None:
    assert type(again) is type(probe)
    assert again.get_params() == probe.get_params()
    for name in probe.param_names():
        assert getattr(again, name) == getattr(probe, name), name
    names = probe.fitted_names()
    assert names and set(names) == {k for k in vars(again) if k.endswith("_") and not k.startswith("_")}
    for name in names:
        a, b = getattr(again, name), getattr(probe, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), name


def test_every_method_has_options_away_from_its_defaults():
    """Adding a hyperparameter means adding it to OPTIONS, so the reload test checks that it is saved."""
    assert set(OPTIONS) == set(METHODS)
    for method, options in OPTIONS.items():
        cls = probe_class(method)
        assert set(options) == set(cls.param_names()), method
        defaults = inspect.signature(cls.__init__).parameters
        for name, value in options.items():
            assert value != defaults[name].default, (method, name)


@pytest.mark.parametrize("method", METHODS)
def test_reload_is_a_true_copy(tmp_path, method):
    probe = make_probe(method, **OPTIONS[method])
    assert probe.get_params() == OPTIONS[method]
    x, y = _data(probe.pair)
    probe.fit(x, y)
    probe.save(tmp_path / "p.safetensors", extra={"note": "reload"})
    again = load_probe(tmp_path / "p.safetensors")
    assert_same_probe(again, probe)
    assert torch.equal(again.score(x), probe.score(x))
    # and the copy of a copy (nothing is lost on a second round trip)
    again.save(tmp_path / "q.safetensors")
    assert_same_probe(load_probe(tmp_path / "q.safetensors"), probe)


@pytest.mark.parametrize("method", ["lr", "ccs"])
def test_refit_replaces_every_fitted_attribute(method):
    probe = make_probe(method, **OPTIONS[method])
    x, y = _data(probe.pair)
    probe.fit(x, y)
    first = probe.state_dict()
    probe.fit(x[:1], y)
    assert all(v.shape[0] == 1 for v in probe.state_dict().values() if v.ndim), "a stale attribute survived"
    assert set(probe.state_dict()) == set(first)


def test_a_file_missing_a_tensor_is_refused(tmp_path):
    probe = make_probe("ccs", **OPTIONS["ccs"]).fit(*_data(True))
    tensors = {k: v.contiguous() for k, v in probe.state_dict().items() if k != "n_iter"}
    meta = {"format": PROBE_FORMAT, "format_version": "1", "method": "ccs", "config": "{}", "extra": "{}"}
    save_file(tensors, str(tmp_path / "p.safetensors"), metadata=meta)
    with pytest.raises(QuirkyError, match="n_iter"):
        load_probe(tmp_path / "p.safetensors")


def test_an_old_file_without_a_later_option_loads_with_its_default(tmp_path):
    """Files written before `max_chunk_bytes` was saved: the option only sets memory use, so its default is safe."""
    probe = make_probe("lda", shrinkage=0.2).fit(*_data(False))
    meta = {"format": PROBE_FORMAT, "format_version": "1", "method": "lda", "config": '{"shrinkage": 0.2}'}
    save_file(
        {k: v.clone() for k, v in probe.state_dict().items()},
        str(tmp_path / "old.safetensors"),
        metadata=meta,
    )
    assert_same_probe(load_probe(tmp_path / "old.safetensors"), probe)


def test_undeclared_state_and_unstored_options_are_programming_errors():
    class Undeclared(probe_class("mean-diff")):  # type: ignore[misc,valid-type]
        def _fit(self, x: torch.Tensor, y: torch.Tensor) -> None:
            super()._fit(x, y)
            self.extra_ = x.mean()

    with pytest.raises(TypeError, match="extra_"):
        Undeclared().fit(*_data(False))

    class Unstored(probe_class("mean-diff")):  # type: ignore[misc,valid-type]
        def __init__(self, alpha: float = 1.0) -> None:
            pass

    with pytest.raises(TypeError, match="alpha"):
        Unstored().get_params()


def test_saved_probe_files_are_byte_identical(tmp_path) -> None:
    """Equal probes give equal files: safetensors writes its metadata in hash order, which `write_safetensors`
    sorts (without it, 5 saves of one probe practically never agree), and the file still loads as the probe."""
    import hashlib

    from quirky.probes import load_probe, make_probe

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 40, 6, generator=g), (torch.arange(40) % 2).float()
    probe = make_probe("lr").fit(x, y)
    digests = set()
    for i in range(5):
        probe.save(tmp_path / f"p{i}.safetensors", extra={"experiment": "A->A", "n_train": 40})
        digests.add(hashlib.sha256((tmp_path / f"p{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    torch.testing.assert_close(
        load_probe(tmp_path / "p0.safetensors").score(x), probe.score(x), rtol=0, atol=0
    )
