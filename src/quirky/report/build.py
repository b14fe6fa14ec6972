"""`quirky report RUN_DIR`: one HTML page, a Markdown version and a JSON summary of whatever a run holds.

Why tolerant: a report is most useful while a sweep is still running or after one stage failed; each section
reads only its own stage's outputs, says "not run" when they are absent, and a section whose files cannot be
read shows the error instead of taking the whole report down (the error is also listed in summary.json).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quirky.errors import QuirkyError
from quirky.fileio import write_json
from quirky.outdir import check_output, replace_output
from quirky.report.document import Section, render_html, render_markdown
from quirky.report.sections import BUILDERS, clean_json
from quirky.rundir import discover

HTML = "report.html"
MARKDOWN = "report.md"
SUMMARY = "summary.json"
FIGURES = "figures"


@dataclass
class ReportResult:
    out_dir: Path
    sections: list[Section]
    summary: dict[str, Any]
    errors: dict[str, str]

    @property
    def html(self) -> Path:
        return self.out_dir / HTML

    @property
    def markdown(self) -> Path:
        return self.out_dir / MARKDOWN

    @property
    def summary_json(self) -> Path:
        return self.out_dir / SUMMARY


def build_report(
    run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None
) -> ReportResult:
    """Build every section from `run_dir` and write report.html, report.md (+ figures/), summary.json."""
    run = discover(run_dir)
    out = Path(out_dir) if out_dir is not None else run.report_dir
    check_output(out, "report", inputs=[run.root])  # refuse before any work, never after
    sections: list[Section] = []
    summary: dict[str, Any] = {"run_dir": run.root.name, "sections": {}}
    errors: dict[str, str] = {}
    for key, builder in BUILDERS:
        try:
            section, data = builder(run)
        except (QuirkyError, OSError, ValueError, KeyError, TypeError) as e:
            message = f"{type(e).__name__}: {e}"
            errors[key] = message
            section = Section(
                key, key.capitalize(), present=False, note=f"could not build this section: {message}"
            )
            data = {"present": False, "error": message}
        sections.append(section)
        summary["sections"][key] = data
    summary["figures"] = [f.name for s in sections for f in s.figures()]
    summary["errors"] = errors
    title = f"quirky report: {run.root.resolve().name}"
    with replace_output(out, "report", inputs=[run.root]) as tmp:
        (tmp / HTML).write_text(render_html(title, sections), encoding="utf-8")
        (tmp / MARKDOWN).write_text(render_markdown(title, sections, FIGURES), encoding="utf-8")
        figdir = tmp / FIGURES
        figdir.mkdir()
        for s in sections:
            for f in s.figures():
                (figdir / f"{f.name}.png").write_bytes(f.png)
        write_json(tmp / SUMMARY, clean_json(summary))
    return ReportResult(out_dir=out, sections=sections, summary=summary, errors=errors)
