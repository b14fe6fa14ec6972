"""Interventions: reflect the last-token state across a probe direction and measure the LM's answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quirky._lazy import lazy_exports

_EXPORTS = {
    "quirky.interventions.reflect": (
        "decoder_layers",
        "final_norm",
        "householder",
        "reflect_last_position",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from quirky.interventions.reflect import decoder_layers, final_norm, householder, reflect_last_position

__all__ = ["decoder_layers", "final_norm", "householder", "reflect_last_position"]
