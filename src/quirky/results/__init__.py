"""The committed results archive (small outputs of a run) and the docs tables built from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quirky._lazy import lazy_exports

_EXPORTS = {
    "quirky.results.archive": ("Archive", "collect"),
    "quirky.results.tables": ("BLOCKS", "render_blocks", "update_doc"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from quirky.results.archive import Archive, collect
    from quirky.results.tables import BLOCKS, render_blocks, update_doc

__all__ = ["BLOCKS", "Archive", "collect", "render_blocks", "update_doc"]
