"""The probe zoo (Contract 3): one class per method, all fitted on every layer at once.

    from quirky.probes import make_probe, load_probe
    probe = make_probe("lr").fit(x_train, y_train)       # x: [L, n, d] (pair methods: [L, n, 2, d])
    scores = probe.score(x_test)                          # [L, n] log-odds-like, sign resolved on training data
    probe.save("lr.safetensors"); same = load_probe("lr.safetensors")

Linear probes expose `direction` [L, f] and `bias` [L] with score = x . direction + bias (ccs/crc: applied to
h_pos - h_neg; lr-on-pair/mean-diff-on-pair: f = 2d over [h_neg ; h_pos]).  `random` is a distribution of K
random directions and scores [L, K, n].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quirky._lazy import lazy_exports

#: Every method, in the reference's order.  A plain list here (the classes live in `registry`), so that naming the
#: methods, e.g. in the CLI's help, does not import torch.
METHODS: tuple[str, ...] = (
    "lr",
    "lr-on-pair",
    "mean-diff",
    "mean-diff-on-pair",
    "lda",
    "ccs",
    "crc",
    "random",
)

_EXPORTS = {
    "quirky.probes.registry": (
        "PROBES",
        "load_probe",
        "make_probe",
        "probe_class",
    ),
    "quirky.probes.base": ("Probe",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from quirky.probes.base import Probe
    from quirky.probes.registry import PROBES, load_probe, make_probe, probe_class

__all__ = ["METHODS", "PROBES", "Probe", "load_probe", "make_probe", "probe_class"]
