"""`quirky report`: an HTML page, a Markdown version and a JSON summary of a run directory."""

from quirky.report.build import build_report
from quirky.report.layout import discover, finetune_key, model_slug

__all__ = ["build_report", "discover", "finetune_key", "model_slug"]
