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


def test_a_record_names_its_cpu_its_data_and_its_teacher(tmp_path) -> None:
    import torch

    from bench.provenance import cpu_model
    from bench.runner import weights_digest
    from bench.runs import RunConfig, make_run_config
    from bench.store import Store
    from bench.sweep import run_sweep
    from tests.conftest import TINY_DATA, TINY_HP

    cfg = make_run_config("output_distill", "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 1}, TINY_DATA,
                          teacher_hparams={**TINY_HP, "epochs": 1})
    run_sweep([cfg], tmp_path, "cpu", progress=False)
    store = Store(tmp_path)
    student, teacher = store.get(cfg.run_id), store.get(RunConfig.from_dict(cfg.teacher).run_id)
    assert student["provenance"]["cpu"] == cpu_model() != ""
    assert student["meta"]["data_sha256"] == teacher["meta"]["data_sha256"]  # the same images, seed 0
    assert len(student["meta"]["teacher_sha256"]) == 64 and "teacher_sha256" not in teacher["meta"]
    model = torch.nn.Linear(2, 2)
    before = weights_digest(model)
    with torch.no_grad():
        model.weight[0, 0] += 1e-6
    assert weights_digest(model) != before


def test_the_data_digest_changes_with_one_pixel(tiny_dataset) -> None:
    import dataclasses

    from bench.data import content_digest

    before = content_digest(tiny_dataset)
    x = tiny_dataset.splits["train"].x.clone()
    x[0, 0, 0, 0] ^= 1
    changed = dataclasses.replace(tiny_dataset, splits={**tiny_dataset.splits,
                                                      "train": dataclasses.replace(tiny_dataset.splits["train"], x=x)})
    assert content_digest(changed) != before == content_digest(tiny_dataset)
