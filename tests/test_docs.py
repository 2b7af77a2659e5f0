"""The README is a short guide: its links resolve, and it holds no hand-typed results (they live in generated
files under results/, checked against their records by tests/test_leaderboard.py)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(path: Path) -> list[str]:
    """The lines of a Markdown file outside code fences."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def test_links_resolve() -> None:
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_readme_and_docs_hold_no_hand_typed_results() -> None:
    """A results table row (a decimal number in a table) or an accuracy in prose means a number was copied by
    hand; generate it under results/ and link to it instead."""
    for doc in DOCS:
        for line in prose(doc):
            if line.startswith("|") and doc.name == "README.md":  # the docs' tables hold settings (ρ = 0.99)
                assert not re.search(r"\b\d+\.\d+\b", line), f"{doc.name}: {line}"
            assert not re.search(r"\b\d+\.\d+ ?%|accuracy (of )?\d|images/s: \d|\d[\d,]* images/s", line), \
                f"{doc.name}: {line}"
