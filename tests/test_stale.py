"""Runs bound to their code: a finished run whose code changed is stale and is run again (only that run);
failures inside a sweep are recorded and the sweep goes on."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import bench.fingerprint as fingerprint
from bench.runs import RunConfig, make_run_config
from bench.store import Store
from bench.sweep import run_sweep
from tests.conftest import TINY_DATA, TINY_HP


def test_plugin_fingerprint_follows_the_module_and_what_it_uses(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    helper_file, method_file = tmp_path / "helper.py", tmp_path / "fake.py"
    helper_file.write_text("SCALE = 1\n")
    method_file.write_text("class Fake: ...\n")
    helper = types.ModuleType("methods._helper_for_test")
    helper.__file__ = str(helper_file)
    module = types.ModuleType("methods._fake_for_test")
    module.__file__ = str(method_file)
    module.helper = helper  # the method module imports a helper module of its package

    class Fake:
        pass

    Fake.__module__ = module.__name__
    module.Fake = Fake
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(sys.modules, helper.__name__, helper)
    monkeypatch.setattr(fingerprint, "ROOT", tmp_path)
    first = fingerprint.plugin_fingerprint(Fake)
    assert fingerprint.plugin_fingerprint(Fake) == first
    helper_file.write_text("SCALE = 2\n")
    second = fingerprint.plugin_fingerprint(Fake)
    method_file.write_text("class Fake: pass\n")
    assert len({first, second, fingerprint.plugin_fingerprint(Fake)}) == 3


def test_real_methods_have_distinct_fingerprints_sharing_modules_where_they_share_code() -> None:
    from bench.method import get_method

    erm, kd, ods = (fingerprint.plugin_fingerprint(get_method(m)) for m in ("erm", "kd", "output_distill"))
    assert erm != kd and kd == ods  # kd and output_distill live in one module


def configs() -> list:
    return [make_run_config(m, "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 1}, TINY_DATA,
                            teacher_hparams={**TINY_HP, "epochs": 1}) for m in ("erm", "output_distill", "ule")]


def test_editing_a_method_reruns_exactly_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = configs()
    first = run_sweep(runs, tmp_path, "cpu", progress=False)
    assert first["finished"] == 3 and first["failed"] == 0
    before = {r["run_id"]: r["updated_at"] for r in Store(tmp_path).runs()}

    real = fingerprint.plugin_fingerprint
    from bench.method import get_method

    def edited(obj: object) -> str:  # as if methods/erm.py had been edited
        return "edited" if obj is get_method("erm") else real(obj)

    monkeypatch.setattr(fingerprint, "plugin_fingerprint", edited)
    kept = run_sweep(runs, tmp_path, "cpu", progress=False, reuse_stale=True)
    assert kept["skipped"] == 3  # stale erm kept as asked
    again = run_sweep(runs, tmp_path, "cpu", progress=False)
    after = {r["run_id"]: r for r in Store(tmp_path).runs()}
    changed = {run_id for run_id in before if after[run_id]["updated_at"] != before[run_id]}
    assert changed == {runs[0].run_id}
    assert again["finished"] == 3 and after[runs[0].run_id]["code"]["method"] == "edited"


def test_a_kept_stale_teacher_is_not_retrained_for_its_student(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    student = [make_run_config("output_distill", "coloured_mnist", "fast", seed, {**TINY_HP, "epochs": 1}, TINY_DATA,
                               teacher_hparams={**TINY_HP, "epochs": 1}) for seed in range(3)]
    teacher_id = RunConfig.from_dict(student[0].teacher).run_id
    run_sweep(student[:1], tmp_path, "cpu", progress=False)
    trained = Store(tmp_path).get(teacher_id)["updated_at"]
    real = fingerprint.engine_fingerprint
    monkeypatch.setattr(fingerprint, "engine_fingerprint", lambda: "edited-" + real())  # as if bench/ were edited
    run_sweep(student[1:2], tmp_path, "cpu", progress=False, reuse_stale=True)
    assert Store(tmp_path).get(teacher_id)["updated_at"] == trained
    run_sweep(student[2:], tmp_path, "cpu", progress=False)
    assert Store(tmp_path).get(teacher_id)["updated_at"] != trained


def test_a_sweep_survives_a_diverging_teacher_and_an_oversized_batch(tmp_path: Path) -> None:
    from reports.report import write_report

    diverging_teacher = {**TINY_HP, "epochs": 1, "lr": 1e30, "grad_clip": 0.0, "momentum": 0.0}
    runs = [
        make_run_config("erm", "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 1}, TINY_DATA),
        make_run_config("erm", "coloured_mnist", "fast", 1, {**TINY_HP, "batch_size": 4096}, TINY_DATA),
        make_run_config("output_distill", "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 1}, TINY_DATA,
                        teacher_hparams=diverging_teacher),
    ]
    counts = run_sweep(runs, tmp_path, "cpu", progress=False)
    store = Store(tmp_path)
    status = {r["run_id"]: r for r in store.runs()}
    assert status[runs[0].run_id]["status"] == "finished"
    assert "batch_size 4096 is larger" in status[runs[1].run_id]["error"]
    assert "non-finite" in status[RunConfig.from_dict(runs[2].teacher).run_id]["error"]
    assert "its teacher run" in status[runs[2].run_id]["error"]
    assert counts["failed"] == 2 and len(counts["failed_runs"]) == 2
    assert not [r for r in store.runs() if r["status"] == "running"]
    report = write_report(tmp_path)
    assert "batch_size 4096" in (report / "report.md").read_text()
    retried = run_sweep(runs, tmp_path, "cpu", progress=False, retry_failed=True)
    assert retried["failed"] == 2 and retried["skipped"] == 1  # retried, and they fail again for the same reasons
