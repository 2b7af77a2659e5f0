"""Report building blocks and their renderers: Markdown, self-contained HTML, LaTeX and CSV.

A report is a list of blocks; each renderer turns the same list into one format, so every format shows
the same tables in the same order. Output is deterministic (no timestamps, stable ordering).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import re
from dataclasses import dataclass
from typing import Any, Union

import pandas as pd


@dataclass(frozen=True)
class Heading:
    """A section heading (level 1 = title)."""

    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """A plain-text paragraph."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells; ``name`` is its file stem under ``tables/``."""

    columns: list[str]
    rows: list[list[str]]
    name: str = ""


@dataclass(frozen=True)
class Plot:
    """A PNG plot, saved as ``plots/<name>`` and inlined into the HTML."""

    title: str
    name: str
    png: bytes


Block = Union[Heading, Para, Table, Plot]  # noqa: UP007 (a runtime alias: `|` needs Python 3.10+)


def mean_std(mean: Any, std: Any, digits: int = 2) -> str:
    """``mean ± std`` ("n/a" for an undefined std, "–" for a missing mean)."""
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f} ± {'n/a' if std is None or pd.isna(std) else f'{std:.{digits}f}'}"


def slug(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


# --- Markdown -------------------------------------------------------------------------------
def markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_markdown_block(block) for block in blocks) + "\n"


def _markdown_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Para):
        return block.text
    if isinstance(block, Plot):
        return f"![{block.title}](plots/{block.name})"
    lines = [block.columns, ["---"] * len(block.columns), *block.rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


# --- HTML -----------------------------------------------------------------------------------
STYLE = ("body{font-family:sans-serif;max-width:90em;margin:1em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0;font-size:.9em}"
         "td,th{border:1px solid #bbb;padding:.2em .5em}th{background:#f0f0f0}"
         "td{text-align:right}td:first-child{text-align:left}img{max-width:100%}"
         "nav{columns:3;font-size:.9em}figure{margin:.5em 0}figcaption{font-size:.85em;color:#555}")


def html_page(blocks: list[Block], title: str) -> str:
    """A self-contained page (plots inlined as data URIs) with a table of contents of the level-2 headings."""
    sections = [block for block in blocks if isinstance(block, Heading) and block.level == 2]
    toc = "".join(f'<a href="#{_anchor(h.text)}">{html.escape(h.text)}</a><br>' for h in sections)
    body = "\n".join(_html_block(block) for block in blocks)
    nav = f"<nav>{toc}</nav>\n" if len(sections) > 1 else ""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{nav}{body}\n</body>\n</html>\n")


def _anchor(text: str) -> str:
    return "s-" + slug(text).lower()


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        anchor = f' id="{_anchor(block.text)}"' if block.level == 2 else ""
        return f"<h{block.level}{anchor}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Plot):
        data = base64.b64encode(block.png).decode("ascii")
        title = html.escape(block.title)
        return (f'<figure><img alt="{title}" src="data:image/png;base64,{data}">'
                f"<figcaption>{title}</figcaption></figure>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
    rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


# --- LaTeX ----------------------------------------------------------------------------------
LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_UNICODE = {"±": r"$\pm$", "−": "$-$", "Δ": r"$\Delta$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$",
                 "–": "--", "²": r"$^2$", "→": r"$\rightarrow$", "τ": r"$\tau$", "λ": r"$\lambda$",
                 "ε": r"$\varepsilon$", "▲": r"$\blacktriangle$", "▼": r"$\blacktriangledown$", "·": r"$\cdot$",
                 "…": r"\ldots{}", "‖": r"$\|$", "₁": r"$_1$", "½": r"$\frac{1}{2}$", "ρ": r"$\rho$"}


def latex_escape(text: str) -> str:
    out = "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)
    return "".join(LATEX_UNICODE.get(ch, ch) for ch in out)


def latex_table(table: Table) -> str:
    """A booktabs ``tabular`` (first column left-aligned, the others right-aligned)."""
    spec = "l" + "r" * (len(table.columns) - 1)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def latex_document(blocks: list[Block], title: str) -> str:
    """A standalone LaTeX document (booktabs, graphicx; plots from ``plots/``)."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            command = {1: "section*", 2: "section", 3: "subsection", 4: "subsubsection"}.get(block.level, "paragraph")
            body.append(rf"\{command}{{{latex_escape(block.text)}}}")
        elif isinstance(block, Para):
            body.append(latex_escape(block.text))
        elif isinstance(block, Plot):
            stem = block.name.removesuffix(".png")  # braces: graphicx would read a dot in the stem as the extension
            body.append(r"\begin{figure}[h]\centering\includegraphics[width=\linewidth]{{plots/" + stem + "}.png}"
                        + r"\caption{" + latex_escape(block.title) + r"}\end{figure}")
        else:
            body.append(r"\begin{table}[h]\centering\resizebox{\linewidth}{!}{%" + "\n" + latex_table(block) + "}"
                        + r"\end{table}")
    preamble = (r"\documentclass{article}" "\n" r"\usepackage[margin=2cm]{geometry}" "\n"
                r"\usepackage{booktabs,graphicx,amssymb}" "\n" r"\usepackage[T1]{fontenc}" "\n"
                r"\title{" + latex_escape(title) + "}\n" r"\begin{document}" "\n" r"\maketitle" "\n")
    return preamble + "\n\n".join(body) + "\n" + r"\end{document}" + "\n"


# --- CSV ------------------------------------------------------------------------------------
def table_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()
