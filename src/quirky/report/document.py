"""A tiny document model (sections of paragraphs, tables and figures) rendered to HTML and to Markdown.

Why not a template engine: the report is a flat sequence of sections; two small renderers over one structure keep
the HTML and the Markdown versions in step and need no extra dependency.  The HTML is self-contained: inline CSS,
figures as base64 PNG data URIs, no scripts, no external requests.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""
    digits: int = 3


@dataclass
class Figure:
    name: str  # file stem, unique within the report
    png: bytes
    caption: str


@dataclass
class Code:
    text: str


Block = Paragraph | Table | Figure | Code


@dataclass
class Section:
    id: str
    title: str
    present: bool = True
    note: str = ""
    blocks: list[Block] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    frame = table.frame
    header = [str(c) for c in frame.columns]
    rows = [[_fmt(v, table.digits) for v in row] for row in frame.itertuples(index=False, name=None)]
    return header, rows


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{border-bottom:1px solid #bbb;padding-bottom:.15em;margin-top:2em}
nav{font-size:.9em}nav ul{display:flex;flex-wrap:wrap;gap:.1em 1.2em;list-style:none;padding-left:0;margin:.2em 0}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}td:first-child{white-space:nowrap}.table-wrap{overflow-x:auto}p.caption{font-style:italic;margin:1em 0 .2em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}.note{background:#fff8e0;border-left:4px solid #e0b000;padding:.4em .8em}
.missing{color:#777}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
"""


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained HTML page."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        # one compact line of links: the summary, not the table of contents, should fill the first screen
        '<nav id="contents" aria-label="Contents"><ul>',
    ]
    for s in sections:
        status = "" if s.present else ' <span class="missing">(not run)</span>'
        out.append(f'<li><a href="#{s.id}">{html.escape(s.title)}</a>{status}</li>')
    out.append("</ul></nav>")
    for s in sections:
        out.append(f'<section id="{s.id}" data-present="{str(s.present).lower()}">')
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.note:
            out.append(f'<p class="note">{html.escape(s.note)}</p>')
        for b in s.blocks:
            if isinstance(b, Paragraph):
                out.append(f"<p>{html.escape(b.text)}</p>")
            elif isinstance(b, Code):
                out.append(f"<pre>{html.escape(b.text)}</pre>")
            elif isinstance(b, Table):
                header, rows = _cells(b)
                if b.caption:  # a paragraph, not <caption>: a caption would wrap to the table's width
                    out.append(f'<p class="caption">{html.escape(b.caption)}</p>')
                out.append('<div class="table-wrap"><table>')  # a wide table scrolls, the page does not
                out.append(
                    "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>"
                )
                out.append("<tbody>")
                for r in rows:
                    out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
                out.append("</tbody></table></div>")
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode("ascii")
                out.append(
                    f'<figure id="fig-{b.name}"><img alt="{html.escape(b.caption)}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{html.escape(b.caption)}</figcaption></figure>'
                )
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(title: str, sections: list[Section], figure_dir: str = "figures") -> str:
    """The same report in Markdown; figures are linked as `figure_dir/<name>.png` (written beside the file)."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"- [{s.title}](#{s.id}){'' if s.present else ' (not run)'}"]
    out.append("")
    for s in sections:
        out += [f'<a id="{s.id}"></a>', "", f"## {s.title}", ""]
        if s.note:
            out += [f"> {s.note}", ""]
        for b in s.blocks:
            if isinstance(b, Paragraph):
                out += [b.text, ""]
            elif isinstance(b, Code):
                out += ["```", b.text, "```", ""]
            elif isinstance(b, Table):
                header, rows = _cells(b)
                if b.caption:
                    out += [f"*{b.caption}*", ""]
                out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
                out.append("")
            elif isinstance(b, Figure):
                out += [f"![{b.caption}]({figure_dir}/{b.name}.png)", "", f"*{b.caption}*", ""]
    return "\n".join(out)
