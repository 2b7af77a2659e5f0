"""Import directions between the repository's layers, read from the source with ``ast`` (every import,
function-local ones included; nothing is imported).

- ``bench/explain/`` (the explanation engine) imports no model, method, dataset or report: models declare
  their structure to it (``bench.explain.structure``);
- ``bench/`` (the engine) imports no plugin (``methods``, ``datasets``: it discovers them by package name),
  no report and not the command line;
- ``methods/`` and ``datasets/`` import nothing from ``reports`` or the command line;
- ``reports/`` imports nothing from ``bench.runner``, ``bench.models``, ``methods``, ``datasets`` or the command
  line; the command line (``run_bench.py``) sits on top of everything.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (files, by glob from the repository root; the modules they must not import, with their submodules)
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("bench/explain/**/*.py", ("bench.models", "methods", "datasets", "reports")),
    ("bench/**/*.py", ("reports", "methods", "datasets", "run_bench")),
    ("methods/**/*.py", ("reports", "run_bench")),
    ("datasets/**/*.py", ("reports", "run_bench")),
    ("reports/**/*.py", ("bench.runner", "bench.models", "methods", "datasets", "run_bench")),
]

# (file, forbidden module): imports that break a rule above and are allowed, each with its reason
EXCEPTIONS: set[tuple[str, str]] = {
    # the Fig. 4 check needs the masked layers' depth order and kinds; stored records sort their metric keys
    ("reports/differentiation.py", "bench.models"),
}


def imported_modules(source: str, path: str) -> set[str]:
    """Every module that the file ``path`` (from the repository root) with text ``source`` imports, anywhere
    in it: ``import a.b`` gives a.b; ``from a import b`` gives a and a.b (b may be a submodule); relative
    imports are resolved against the file's package."""
    package = Path(path).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = ".".join(package[:len(package) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations() -> dict[tuple[str, str], set[str]]:
    """(file, forbidden module) -> what of it the file imports, over every rule."""
    found: dict[tuple[str, str], set[str]] = {}
    for pattern, forbidden in RULES:
        for path in sorted(ROOT.glob(pattern)):
            name = path.relative_to(ROOT).as_posix()
            for module in imported_modules(path.read_text(encoding="utf-8"), name):
                for prefix in forbidden:
                    if module == prefix or module.startswith(prefix + "."):
                        found.setdefault((name, prefix), set()).add(module)
    return found


def test_imports_follow_the_layers() -> None:
    assert all(any(ROOT.glob(pattern)) for pattern, _ in RULES)  # no rule checks nothing
    found = violations()
    unexpected = sorted(set(found) - EXCEPTIONS)
    assert not unexpected, "imports against the layering (tests/test_layering.py):\n" + "\n".join(
        f"  {path} imports {', '.join(sorted(found[path, prefix]))}" for path, prefix in unexpected)


def test_exceptions_are_still_needed() -> None:
    """A listed exception that no longer occurs is removed from the list, so that it cannot come back."""
    assert not sorted(EXCEPTIONS - set(violations()))


@pytest.mark.parametrize("source,expected", [
    ("import bench.models as m", {"bench.models"}),
    ("def f():\n    from bench import models", {"bench", "bench.models"}),
    ("from .structure import lrp_chain", {"bench.explain.structure", "bench.explain.structure.lrp_chain"}),
    ("from .. import models", {"bench", "bench.models"}),
])
def test_imports_are_read_everywhere_in_a_file(source: str, expected: set[str]) -> None:
    assert imported_modules(source, "bench/explain/probe.py") == expected
