"""Planning a sweep: settled runs cost nothing, measured recipes are estimated from their records, others from
timed steps on this device; --max-hours keeps teachers, then seed by seed; --dry-run writes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import run_bench
from bench.errors import UserError
from bench.fingerprint import code_fingerprint
from bench.plan import PlannedRun, plan_sweep, recipe, trim
from bench.runner import execute
from bench.runs import make_run_config
from bench.store import Store
from tests.conftest import TINY_DATA, TINY_HP

CPU = torch.device("cpu")


def tiny(method: str = "erm", seed: int = 0):
    return make_run_config(method, "coloured_mnist", "fast", seed, hparams=TINY_HP, dataset_params=TINY_DATA)


def test_unmeasured_runs_are_timed_and_settled_runs_cost_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    finished = execute(tiny(seed=0), store, CPU, progress=False)
    planned = plan_sweep([tiny(seed=0), tiny("kd", seed=0)], [finished], {}, CPU)
    assert (planned[0].state, planned[0].seconds, planned[0].source) == ("finished", 0.0, "done")
    assert planned[1].state == "to run" and planned[1].source == "perf" and planned[1].seconds > 0


def test_a_measured_recipe_is_estimated_from_its_runs_and_a_resume_from_what_is_left() -> None:
    runs = [tiny(seed=s) for s in range(3)]
    measured = [{"run_id": f"old{s}", "status": "finished", "config": tiny(seed=s + 5).to_dict(),
                 "cost": {"device": "cpu", "wall_seconds": w}} for s, w in enumerate((90.0, 100.0, 500.0))]
    measured.append({"run_id": "gpu", "status": "finished", "config": tiny(seed=9).to_dict(),
                     "cost": {"device": "cuda:0", "wall_seconds": 1.0}})  # another kind of device: not evidence here
    assert recipe(runs[0].to_dict()) == recipe(measured[0]["config"])
    planned = plan_sweep(runs, measured, {}, CPU)
    assert [p.seconds for p in planned] == [100.0] * 3 and planned[0].source == "measured (3 runs)"
    code = {"run_id": runs[1].run_id, "status": "running", "config": runs[1].to_dict(),
            "code": code_fingerprint(runs[1].to_dict())}
    resumed = plan_sweep(runs, [code, *measured], {runs[1].run_id: 1}, CPU)[1]
    assert resumed.state == "resume" and resumed.seconds == pytest.approx(50.0)  # 1 of 2 epochs done


def _p(method: str, seed: int, hours: float) -> PlannedRun:
    return PlannedRun(tiny(method, seed), "to run", 0, hours * 3600, "perf")


def test_max_hours_keeps_teachers_then_seed_by_seed_in_method_order() -> None:
    planned = [_p("kd", 1, 1), _p("erm", 1, 1), _p("kd", 0, 1), _p("erm", 0, 1), _p("teacher", 0, 0.5)]
    kept, left = trim(planned, 3.6, ["erm", "kd"])
    assert [(p.config.method, p.config.seed) for p in kept] == [("teacher", 0), ("erm", 0), ("kd", 0), ("erm", 1)]
    assert [(p.config.method, p.config.seed) for p in left] == [("kd", 1)]
    kept, left = trim(planned, 0.1, ["erm", "kd"])
    assert kept == [] and len(left) == 5  # stops at the first run that does not fit
    with pytest.raises(UserError):
        trim(planned, 0, ["erm"])


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run_bench.main(["sweep", "quick", "--seeds", "1", "--dry-run", "--out", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "runs to do of" in text and "CPU-hours" in text and "erm-coloured_mnist" in text
    assert not out.exists()
    assert run_bench.main(["sweep", "quick", "--seeds", "1", "--dry-run", "--max-hours", "0.0001",
                           "--out", str(out), "--device", "cpu"]) == 0
    assert "left out (over --max-hours)" in capsys.readouterr().out and not out.exists()
