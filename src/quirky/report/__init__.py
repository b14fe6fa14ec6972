"""`quirky report`: an HTML page, a Markdown version and a JSON summary of a run directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quirky._lazy import lazy_exports

_EXPORTS = {
    "quirky.report.build": ("build_report",),
    "quirky.rundir": (
        "discover",
        "finetune_key",
        "model_slug",
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from quirky.report.build import build_report
    from quirky.rundir import discover, finetune_key, model_slug

__all__ = ["build_report", "discover", "finetune_key", "model_slug"]
