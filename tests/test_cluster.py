"""Cluster sweeps and sharded stores: submitit's local executor runs the real job path (pickled jobs in
subprocesses, preemption, requeue, resume from the checkpoint) and gives the same table as an inline sweep;
shards written concurrently are read as a union and merged idempotently, also while a writer is writing."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cluster import SlurmOptions
from bench.errors import UserError
from bench.runs import RunConfig, make_run_config
from bench.store import Store, merge_shards, shard_path
from bench.sweep import run_sweep
from reports.records import read_store
from tests.conftest import TINY_DATA

submitit = pytest.importorskip("submitit")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds job processes through /proc")

DATA = {**TINY_DATA, "train_size": 1024}


def configs(epochs: int = 4) -> list:
    return [make_run_config(method, "coloured_mnist", "fast", 0, hparams={"epochs": epochs, "batch_size": 64},
                            dataset_params=DATA) for method in ("erm", "kd")]


def test_submitit_jobs_survive_preemption_and_give_the_inline_table(tmp_path: Path) -> None:
    from bench import cluster

    todo = configs()
    teacher = RunConfig.from_dict(todo[1].teacher)
    inline = run_sweep([teacher, *todo], tmp_path / "inline", "cpu", "inline", progress=False)
    assert inline["finished"] == 3

    out = tmp_path / "jobs"
    run_sweep([teacher], out, "cpu", "inline", progress=False)  # teachers first, inline, as the sweep does
    jobs = cluster.submit(todo, out, "cpu", {"retry_failed": False, "reuse_stale": False}, "submitit-local",
                          SlurmOptions(time_min=30))
    wait_for_checkpoint(out / "runs" / todo[0].run_id)
    preempt(jobs[0])
    ended: list[str] = []
    cluster.wait(jobs, todo, out, lambda cfg, status: ended.append(f"{cfg.method}:{status}"))
    assert sorted(ended) == ["erm:finished", "kd:finished"]

    merged = Store(out)
    record = merged.get(todo[0].run_id)
    assert record["status"] == "finished" and record["cost"]["attempts"] == 2  # resumed, not restarted
    assert [e["epoch"] for e in merged.epochs(todo[0].run_id)] == [1, 2, 3, 4]
    assert len(merged.runs()) == 3  # the teacher seeded into kd's shard is one run, not two
    merged.close()
    pd.testing.assert_frame_equal(table(out), table(tmp_path / "inline"))


def wait_for_checkpoint(run_dir: Path) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "last.pt").exists():
        time.sleep(0.05)
    assert (run_dir / "last.pt").exists()


def preempt(job: object) -> None:
    """What Slurm does to a preempted job: the preemption signal (USR2) to the job's process, which is a
    child of submitit's local controller. submitit's handler checkpoints the job and requeues it."""
    os.kill(job_process(job), signal.SIGUSR2)


def job_process(job: object) -> int:
    controller = job._process.pid  # type: ignore[attr-defined]
    children = [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat")
                if _parent(stat) == controller]
    assert len(children) == 1, children
    return children[0]


def _parent(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def table(folder: Path) -> pd.DataFrame:
    finals = read_store(folder).finals
    return finals.drop(columns=["run_id"]).sort_values(["method", "selection"]).reset_index(drop=True)


def test_a_killed_job_leaves_its_run_to_the_next_sweep(tmp_path: Path) -> None:
    from bench import cluster

    epochs = 20  # the kill lands after the first epoch's checkpoint, long before the last epoch
    runs = configs(epochs=epochs)[:1]
    jobs = cluster.submit(runs, tmp_path, "cpu", {"retry_failed": False, "reuse_stale": False}, "submitit-local",
                          SlurmOptions(time_min=30))
    wait_for_checkpoint(tmp_path / "runs" / runs[0].run_id)
    # killed outright (a node failure, an out-of-memory kill, scancel's last resort): no handler, no requeue.
    # submitit's own cancel goes through its controller's SIGINT handling, which a loaded machine can delay
    # past the end of the run.
    os.kill(job_process(jobs[0]), signal.SIGKILL)
    cluster.wait(jobs, runs, tmp_path, lambda cfg, status: None)
    assert Store(tmp_path).get(runs[0].run_id)["status"] == "running"  # merged as it was left: resumable

    counts = run_sweep(runs, tmp_path, "cpu", "submitit-local", progress=False, slurm=SlurmOptions(time_min=30))
    assert counts["finished"] == 1
    record = Store(tmp_path).get(runs[0].run_id)
    assert record["cost"]["attempts"] == 2
    assert [e["epoch"] for e in Store(tmp_path).epochs(runs[0].run_id)] == list(range(1, epochs + 1))


def _write_shard(folder: str, name: str, runs: int, epochs: int) -> None:
    store = Store(folder, shard=name)
    cfg = make_run_config("erm", "coloured_mnist", "fast", 0).to_dict()
    for r in range(runs):
        run_id = f"{name}-run{r}"
        store.ensure_run(run_id, cfg)
        for e in range(1, epochs + 1):
            store.add_epoch(run_id, e, {"val_loss": float(e)})
        store.finish(run_id, {"last": {"epoch": epochs}}, {}, {})
    store.close()


def test_concurrent_shard_writers_are_read_as_a_union_and_merged_during_writing(tmp_path: Path) -> None:
    Store(tmp_path).close()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_shard, args=(str(tmp_path), f"job{i}", 4, 30)) for i in range(3)]
    for writer in writers:
        writer.start()
    while any(w.is_alive() for w in writers):
        merge_shards(tmp_path)  # while the shards are being written
        union = Store(tmp_path, create=False)
        assert all(len(union.epochs(r["run_id"])) <= 30 for r in union.runs())
        union.close()
    assert all(w.exitcode == 0 for w in writers)
    union = Store(tmp_path, create=False)
    assert len(union.runs("finished")) == 12 and all(len(union.epochs(r["run_id"])) == 30 for r in union.runs())
    union.close()

    merge_shards(tmp_path)
    merged = Store(tmp_path)
    before = [(r["run_id"], r["status"], r["updated_at"]) for r in merged.runs()]
    assert len(before) == 12 and all(status == "finished" for _, status, _ in before)
    assert all([e["epoch"] for e in merged.epochs(r[0])] == list(range(1, 31)) for r in before)
    again = merge_shards(tmp_path)
    assert again["copied"] == 0 and again["unchanged"] == 12  # merging twice changes nothing
    assert [(r["run_id"], r["status"], r["updated_at"]) for r in merged.runs()] == before


def test_a_run_in_two_shards_keeps_its_finished_record(tmp_path: Path) -> None:
    cfg = make_run_config("erm", "coloured_mnist", "fast", 0).to_dict()
    for order in (["a", "b"], ["b", "a"]):
        folder = tmp_path / "".join(order)
        Store(folder).close()
        done, stuck = Store(folder, shard="a"), Store(folder, shard="b")
        done.ensure_run("r", cfg)
        done.add_epoch("r", 1, {"val_loss": 1.0})
        done.finish("r", {"last": {"epoch": 1}}, {}, {})
        time.sleep(0.01)
        stuck.ensure_run("r", cfg)
        stuck.mark_running("r", {"engine": "x"})  # newer, but only running (a job that died)
        assert Store(folder, create=False).get("r")["status"] == "finished"  # the union's choice
        for name in order:
            merge_shards(folder, only=[shard_path(folder, name)])
        assert Store(folder).get("r")["status"] == "finished"
        assert Store(folder).epochs("r") == [{"epoch": 1, "val_loss": 1.0}]


def test_slurm_options_come_from_a_file_then_the_command_line(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "slurm.yaml"
    config.write_text("partition: gpu\naccount: lab\ntime_min: 240\n")
    options = SlurmOptions.load(config, ["time_min=60", "gpus_per_node=2"])
    assert (options.partition, options.account, options.time_min, options.gpus_per_node) == ("gpu", "lab", 60, 2)
    params = options.submitit_parameters("slurm")
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 60 and params["gpus_per_node"] == 2
    assert "slurm_partition" not in options.submitit_parameters("local")
    monkeypatch.setenv("SHORTCUT_BENCH_SLURM", str(config))
    assert SlurmOptions.load().partition == "gpu"
    for bad in (["partitio=gpu"], ["time_min=soon"], ["mem_gb=0"], ["gpu"]):
        with pytest.raises(UserError):
            SlurmOptions.load(config, bad)
    config.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping"):
        SlurmOptions.load(config)


def test_slurm_without_sbatch_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import cluster

    monkeypatch.setattr(cluster.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="sbatch"):
        cluster.submit(configs()[:1], tmp_path, "cpu", {}, "slurm", SlurmOptions())
