"""Runner and store: end-to-end tiny runs, skip of finished runs, resume after an interruption with
nothing lost or duplicated, divergence detection, selection rules, corrupt store."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import torch

from bench.errors import UserError
from bench.runner import execute
from bench.runs import make_run_config
from bench.store import Store
from tests.conftest import TINY_DATA, TINY_HP

CPU = torch.device("cpu")


def tiny_config(method: str = "erm", **hp: object):
    return make_run_config(method, "coloured_mnist", "fast", seed=0, hparams={**TINY_HP, **hp},
                           dataset_params=TINY_DATA)


def test_run_finishes_with_metrics_for_every_split_and_rule(tmp_path: Path) -> None:
    store = Store(tmp_path)
    record = execute(tiny_config("erm", epochs=3), store, CPU, progress=False)
    assert record["status"] == "finished"
    assert set(record["final"]) == {"iid_val", "iid_val_acc", "last", "oracle"}
    final = record["final"]["last"]
    for split in ("val", "iid", "ood", "shift"):
        assert 0.0 <= final[f"{split}_acc"] <= 1.0
        assert f"{split}_worst_group_acc" in final
    assert final["iid_ood_gap"] == pytest.approx(final["iid_acc"] - final["ood_acc"])
    assert [row["epoch"] for row in store.epochs(record["run_id"])] == [1, 2, 3]
    cost = record["cost"]
    assert cost["images_per_second"] > 0 and cost["train_images"] == 3 * (512 // 64) * 64
    assert record["provenance"]["packages"]["torch"] == metadata.version("torch")
    assert record["provenance"]["git"]  # a revision, "+dirty" for an uncommitted tree, or "unknown" outside git
    assert record["code"]["method"] and record["code"]["engine"] and record["code"]["dataset"]
    assert record["meta"]["roles"]["selection"] == "val" and record["meta"]["granted_fields"] == ["y"]
    assert record["meta"]["read_fields"] == ["y"]


def test_finished_run_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    cfg = tiny_config()
    first = execute(cfg, store, CPU, progress=False)
    import bench.runner as runner

    monkeypatch.setattr(runner, "_Training", lambda *a, **k: pytest.fail("a finished run was retrained"))
    again = execute(cfg, store, CPU, progress=False)
    assert again["final"] == first["final"] and again["updated_at"] == first["updated_at"]


def test_teacher_is_trained_once_and_reused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    kd = execute(tiny_config("kd"), store, CPU, progress=False)
    ods = execute(tiny_config("output_distill"), store, CPU, progress=False)
    teachers = [r for r in store.runs() if r["method"] == "teacher"]
    assert len(teachers) == 1 and teachers[0]["status"] == "finished"
    assert kd["config"]["teacher"] == ods["config"]["teacher"]
    assert "ood_agreement" in kd["final"]["iid_val"]


class Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("where", ["after_epoch_record", "after_checkpoint"])
def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            where: str) -> None:
    cfg = tiny_config("erm", epochs=4)
    reference = execute(cfg, Store(tmp_path / "reference"), CPU, progress=False)

    import bench.runner as runner

    store = Store(tmp_path / "interrupted")
    original_add, original_ckpt = Store.add_epoch, runner._Training._checkpoint

    def add_epoch(self: Store, run_id: str, epoch: int, metrics: dict) -> None:
        original_add(self, run_id, epoch, metrics)
        if where == "after_epoch_record" and epoch == 2:
            raise Interrupt

    def checkpoint(self: object, epoch: int, history: list) -> None:
        original_ckpt(self, epoch, history)
        if where == "after_checkpoint" and epoch == 2:
            raise Interrupt

    monkeypatch.setattr(Store, "add_epoch", add_epoch)
    monkeypatch.setattr(runner._Training, "_checkpoint", checkpoint)
    with pytest.raises(Interrupt):
        execute(cfg, store, CPU, progress=False)
    assert store.get(cfg.run_id)["status"] == "running"
    monkeypatch.undo()

    resumed = execute(cfg, Store(tmp_path / "interrupted"), CPU, progress=False)
    assert resumed["status"] == "finished"
    epochs = Store(tmp_path / "interrupted").epochs(cfg.run_id)
    assert [row["epoch"] for row in epochs] == [1, 2, 3, 4]
    assert resumed["final"] == reference["final"]  # deterministic replay: same numbers as uninterrupted


def test_diverging_run_fails_with_a_reason_and_sweep_goes_on(tmp_path: Path) -> None:
    store = Store(tmp_path)
    record = execute(tiny_config("erm", lr=1e30, grad_clip=0.0, momentum=0.0), store, CPU, progress=False)
    assert record["status"] == "failed"
    assert "non-finite" in record["error"] and "epoch 1" in record["error"]
    ok = execute(tiny_config("erm"), store, CPU, progress=False)
    assert ok["status"] == "finished"


def test_store_survives_concurrent_writers(tmp_path: Path) -> None:
    a, b = Store(tmp_path), Store(tmp_path)
    cfg = tiny_config().to_dict()
    a.ensure_run("r1", cfg)
    b.ensure_run("r1", cfg)
    a.add_epoch("r1", 1, {"val_loss": 1.0})
    b.add_epoch("r1", 1, {"val_loss": 0.5})
    assert a.epochs("r1") == [{"epoch": 1, "val_loss": 0.5}]
    assert len(a.runs()) == 1


def test_corrupt_store_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="corrupt"):
        Store(tmp_path)


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """A real kill -9 of the CLI in the middle of a run; the same command then resumes and finishes."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "results"
    command = [sys.executable, "run_bench.py", "run", "--method", "erm", "--dataset", "coloured_mnist",
               "--hp", "epochs=6", "--hp", "batch_size=64", "--data", "train_size=2048", "--data", "val_size=256",
               "--data", "test_size=256", "--out", str(out), "--quiet", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    epochs_seen = 0
    while time.time() < deadline and proc.poll() is None:
        if (out / "store.sqlite").exists():
            try:
                with sqlite3.connect(out / "store.sqlite") as conn:
                    epochs_seen = conn.execute("SELECT count(*) FROM epochs").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        if epochs_seen >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(out)
    (record,) = store.runs()
    before = store.epochs(record["run_id"])
    assert record["status"] == "running" and 2 <= len(before) < 6

    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    after = Store(out).epochs(record["run_id"])
    assert [row["epoch"] for row in after] == [1, 2, 3, 4, 5, 6]
    assert after[0] == before[0]
    assert Store(out).get(record["run_id"])["status"] == "finished"


def test_suite_teacher_overrides_reach_the_embedded_teacher() -> None:
    from bench.suites import DatasetEntry, Suite

    suite = Suite("t", "", "fast", ("teacher", "kd"), (DatasetEntry("coloured_mnist", TINY_DATA),),
                  hparams={"teacher": {"epochs": 1}})
    configs = suite.expand()
    teacher, kd = configs[0], configs[1]
    assert teacher.method == "teacher" and teacher.hparams["epochs"] == 1
    assert kd.teacher == teacher.to_dict()  # one teacher, not two


def test_processes_executor_runs_each_config_once(tmp_path: Path) -> None:
    from bench.sweep import run_sweep

    configs = [make_run_config("erm", "coloured_mnist", "fast", seed, hparams={**TINY_HP, "epochs": 1},
                               dataset_params=TINY_DATA) for seed in (0, 1)]
    counts = run_sweep(configs, tmp_path, device="cpu", executor="processes", workers=2, progress=False)
    assert counts["finished"] == 2 and counts["failed"] == 0
    again = run_sweep(configs, tmp_path, device="cpu", executor="processes", workers=2, progress=False)
    assert again["skipped"] == 2
    store = Store(tmp_path)
    assert len(store.runs()) == 2 and all(len(store.epochs(r["run_id"])) == 1 for r in store.runs())


def test_a_run_held_by_another_process_is_not_run_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.runner as runner

    store = Store(tmp_path)
    cfg = tiny_config()
    store.ensure_run(cfg.run_id, cfg.to_dict())
    monkeypatch.setattr(runner, "_Training", lambda *a, **k: pytest.fail("ran a run that another process holds"))
    with runner.run_lock(store.run_dir(cfg.run_id), wait=False) as owned:
        assert owned
        # a second lock on the same folder from this process goes through another open file: it must fail
        record = execute(cfg, store, CPU, progress=False)
    assert record["status"] == "pending"


def test_unreadable_checkpoint_restarts_the_run_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.runner as runner

    cfg = tiny_config("erm", epochs=3)
    store = Store(tmp_path)
    original = runner._Training._checkpoint

    def checkpoint(self: object, epoch: int, history: list) -> None:
        original(self, epoch, history)
        if epoch == 2:
            raise Interrupt

    monkeypatch.setattr(runner._Training, "_checkpoint", checkpoint)
    with pytest.raises(Interrupt):
        execute(cfg, store, CPU, progress=False)
    monkeypatch.undo()
    (store.run_dir(cfg.run_id) / "last.pt").write_bytes(b"\x80\x02garbage")
    record = execute(cfg, store, CPU, progress=False)
    assert record["status"] == "finished"
    assert [row["epoch"] for row in store.epochs(cfg.run_id)] == [1, 2, 3]
    assert record["cost"]["train_images"] == 3 * (512 // 64) * 64  # counters restarted with the run


def test_missing_teacher_artifact_is_retrained(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = execute(tiny_config("kd"), store, CPU, progress=False)
    teacher_id = [r["run_id"] for r in store.runs() if r["method"] == "teacher"][0]
    (store.run_dir(teacher_id) / "best.pt").unlink()
    second = execute(tiny_config("output_distill"), store, CPU, progress=False)
    assert first["status"] == second["status"] == "finished"
    assert (store.run_dir(teacher_id) / "best.pt").exists()
    assert store.get(teacher_id)["status"] == "finished"


def test_a_teacher_trained_by_another_process_is_waited_for(tmp_path: Path) -> None:
    """Another process holds the teacher's lock (it is training it): the student waits, it does not fail."""
    import threading
    import time

    import bench.runner as runner
    from bench.fingerprint import code_fingerprint
    from bench.runs import RunConfig

    store = Store(tmp_path)
    cfg = tiny_config("output_distill", epochs=1)
    teacher = RunConfig.from_dict(cfg.teacher)
    store.ensure_run(teacher.run_id, teacher.to_dict())
    store.mark_running(teacher.run_id, code_fingerprint(teacher.to_dict()))
    held = threading.Event()

    def other_process() -> None:
        with runner.run_lock(store.run_dir(teacher.run_id), wait=False):
            held.set()
            time.sleep(1.5)

    thread = threading.Thread(target=other_process)
    thread.start()
    held.wait()
    start = time.perf_counter()
    record = execute(cfg, Store(tmp_path), CPU, progress=False)
    thread.join()
    assert record["status"] == "finished", record["error"]
    assert time.perf_counter() - start >= 1.0  # it waited for the lock before training the teacher itself
    assert Store(tmp_path).get(teacher.run_id)["status"] == "finished"


def test_a_store_file_is_never_read_raw_while_this_process_has_it_open(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing any descriptor of an SQLite file drops every POSIX lock this process holds on it (a sweep keeps a
    store open while each run opens its own): after the first identification, no raw read may happen."""
    import bench.store as store_module

    first = Store(tmp_path)
    monkeypatch.setattr(store_module, "_read_header", lambda path: pytest.fail("raw read of an open store"))
    second = Store(tmp_path)
    second.ensure_run("r1", tiny_config().to_dict())
    second.close()
    assert [run["run_id"] for run in first.runs()] == ["r1"]
