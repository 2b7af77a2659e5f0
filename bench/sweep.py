"""Sweeps: run a list of configs with an executor, skipping finished runs and resuming interrupted ones.

Executors: ``inline`` (this process), ``processes`` (N local worker processes, e.g. one per GPU with
``--device cuda``), ``slurm`` (one cluster job per run through submitit, an optional extra; ``bench.cluster``)
and ``submitit-local`` (the same jobs as local subprocesses). Teachers always run first, inline, because
other runs depend on them. Shards written by earlier cluster jobs are merged into the store first.
"""
from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import cluster
from bench.cluster import SlurmOptions
from bench.errors import UserError
from bench.runner import RunFailed, execute, pick_device, settled
from bench.runs import TEACHER_METHOD, RunConfig
from bench.store import Store, merge_shards

EXECUTORS = ("inline", "processes", "slurm", "submitit-local")


def run_one(config: dict[str, Any], out: str, device: str, progress: bool = False, retry_failed: bool = False,
            reuse_stale: bool = False, shard: str | None = None) -> str:
    """Execute one run in this process; returns its final status. Used by every executor (a cluster job writes
    ``shard`` only). A run that cannot start (a bad input found at run time, a failed teacher) is recorded as
    failed with the reason, so the sweep goes on and its report lists it."""
    store = Store(Path(out), shard=shard)
    cfg = RunConfig.from_dict(config)
    try:
        return execute(cfg, store, pick_device(device), progress, retry_failed, reuse_stale)["status"]
    except (UserError, RunFailed) as err:
        store.ensure_run(cfg.run_id, cfg.to_dict())
        store.fail(cfg.run_id, str(err))
        print(f"run {cfg.run_id} failed: {err}", file=sys.stderr)
        return "failed"
    finally:
        store.close()


def run_sweep(configs: list[RunConfig], out: Path, device: str = "auto", executor: str = "inline",
              workers: int | None = None, progress: bool = True, retry_failed: bool = False,
              reuse_stale: bool = False, after_each: Callable[[RunConfig, str], None] | None = None,
              slurm: SlurmOptions | None = None) -> dict[str, Any]:
    """Run ``configs``; returns counts of final statuses and the ids of the failed runs. ``after_each(config,
    status)`` is called in this process as each run ends, e.g. to export it. ``slurm``: what cluster jobs ask
    for (``SlurmOptions.load()`` when not given)."""
    after = after_each or (lambda cfg, status: None)
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if executor in cluster.CLUSTERS:
        cluster.check_available(executor)
    merge_shards(out)
    store = Store(out)
    pick_device(device)
    before = {r["run_id"]: r for r in store.runs()}
    options = {"retry_failed": retry_failed, "reuse_stale": reuse_stale}
    teachers = [c for c in configs if c.method == TEACHER_METHOD]
    others = [c for c in configs if c.method != TEACHER_METHOD]
    for cfg in teachers:  # each finished one is checked for staleness by execute, cheaply
        after(cfg, run_one(cfg.to_dict(), str(out), device, progress, **options))
    todo = others
    if executor == "inline" or (executor == "processes" and len(todo) <= 1):
        for i, cfg in enumerate(todo, 1):
            if (before.get(cfg.run_id) or {}).get("status") != "finished":
                print(f"[{i}/{len(todo)}] {cfg.label()}", file=sys.stderr)
            after(cfg, run_one(cfg.to_dict(), str(out), device, progress, **options))
    elif executor == "processes":
        _run_processes(todo, out, device, workers, options, after)
    else:
        todo = [c for c in todo if not settled(store.get(c.run_id), c, retry_failed, reuse_stale)]
        jobs = cluster.submit(todo, out, device, options, executor, slurm or SlurmOptions.load())
        cluster.wait(jobs, todo, out, after)
    after = {c.run_id: store.get(c.run_id) or {"status": "pending", "updated_at": None} for c in configs}
    store.close()
    statuses = [record["status"] for record in after.values()]
    counts: dict[str, Any] = {s: statuses.count(s) for s in ("finished", "failed", "running", "pending")}
    counts["skipped"] = sum(run_id in before and before[run_id]["status"] in ("finished", "failed")
                            and before[run_id]["updated_at"] == after[run_id]["updated_at"] for run_id in after)
    counts["failed_runs"] = [f"{run_id}: {record.get('error')}" for run_id, record in after.items()
                             if record["status"] == "failed"]
    return counts


def _worker_devices(device: str, workers: int | None) -> list[str]:
    if device in ("cuda", "auto") and torch.cuda.is_available():
        count = workers or torch.cuda.device_count()
        return [f"cuda:{i % torch.cuda.device_count()}" for i in range(count)]
    return ["cpu"] * (workers or 2)


_WORKER_DEVICE = "cpu"


def _init_worker(devices: Any) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()


def _run_indexed(job: tuple[int, dict[str, Any], str, dict[str, bool]]) -> tuple[int, str]:
    index, config, out, options = job
    return index, run_one(config, out, _WORKER_DEVICE, **options)


def _run_processes(todo: list[RunConfig], out: Path, device: str, workers: int | None,
                   options: dict[str, bool], after: Callable[[RunConfig, str], None]) -> None:
    """One worker process per device (each GPU, or ``workers`` CPU processes); each pulls the next run."""
    devices = _worker_devices(device, workers)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for name in devices:
        queue.put(name)
    with context.Pool(len(devices), initializer=_init_worker, initargs=(queue,)) as pool:
        jobs = [(i, cfg.to_dict(), str(out), options) for i, cfg in enumerate(todo)]
        for index, status in pool.imap_unordered(_run_indexed, jobs, chunksize=1):  # as each run ends
            print(f"{todo[index].label()}: {status}", file=sys.stderr)
            after(todo[index], status)
