"""A run's revision is "+dirty" when code differs from HEAD, not when only generated results do (results are
exported into the checkout while a sweep runs)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import bench.provenance as provenance


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_only_code_changes_make_a_tree_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "bench" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.md").write_text("| a |\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    clean = provenance.git_revision()
    assert len(clean) == 40 and not clean.endswith("+dirty")
    (tmp_path / "results" / "table.md").write_text("| b |\n")
    assert provenance.git_revision() == clean  # an exported result
    (tmp_path / "bench" / "code.py").write_text("x = 2\n")
    assert provenance.git_revision() == clean + "+dirty"
