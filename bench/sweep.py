"""Sweeps: run a list of configs with an executor, skipping finished runs and resuming interrupted ones.

Executors: ``inline`` (this process), ``processes`` (N local worker processes, e.g. one per GPU with
``--device cuda``) and ``slurm`` (submitit, optional extra). Teachers always run first, inline, because
other runs depend on them.
"""
from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path
from typing import Any

import torch

from bench.errors import UserError
from bench.runner import execute, pick_device
from bench.runs import TEACHER_METHOD, RunConfig
from bench.store import Store

EXECUTORS = ("inline", "processes", "slurm")


def run_one(config: dict[str, Any], out: str, device: str, progress: bool = False) -> str:
    """Execute one run in this process; returns its final status. Used by every executor."""
    store = Store(Path(out))
    try:
        return execute(RunConfig.from_dict(config), store, pick_device(device), progress)["status"]
    finally:
        store.close()


def run_sweep(configs: list[RunConfig], out: Path, device: str = "auto", executor: str = "inline",
              workers: int | None = None, progress: bool = True) -> dict[str, int]:
    """Run ``configs``; returns counts of final statuses."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    store = Store(out)
    pick_device(device)
    finished_before = {r["run_id"] for r in store.runs("finished")}
    teachers = [c for c in configs if c.method == TEACHER_METHOD]
    others = [c for c in configs if c.method != TEACHER_METHOD]
    todo_teachers = [c for c in teachers if c.run_id not in finished_before]
    for cfg in todo_teachers:
        run_one(cfg.to_dict(), str(out), device, progress)
    todo = [c for c in others if c.run_id not in finished_before]
    if executor == "inline" or len(todo) <= 1:
        for i, cfg in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {cfg.label()}", file=sys.stderr)
            run_one(cfg.to_dict(), str(out), device, progress)
    elif executor == "processes":
        _run_processes(todo, out, device, workers)
    else:
        _run_slurm(todo, out, device)
    statuses = [store.get(c.run_id)["status"] for c in configs]  # type: ignore[index]
    store.close()
    counts = {s: statuses.count(s) for s in ("finished", "failed", "running", "pending")}
    counts["skipped"] = sum(c.run_id in finished_before for c in configs)
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


def _run_in_worker(config: dict[str, Any], out: str) -> str:
    return run_one(config, out, _WORKER_DEVICE)


def _run_processes(todo: list[RunConfig], out: Path, device: str, workers: int | None) -> None:
    """One worker process per device (each GPU, or ``workers`` CPU processes); each pulls the next run."""
    devices = _worker_devices(device, workers)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for name in devices:
        queue.put(name)
    with context.Pool(len(devices), initializer=_init_worker, initargs=(queue,)) as pool:
        jobs = [(cfg.to_dict(), str(out)) for cfg in todo]
        for cfg, status in zip(todo, pool.starmap(_run_in_worker, jobs, chunksize=1), strict=True):
            print(f"{cfg.label()}: {status}", file=sys.stderr)


def _run_slurm(todo: list[RunConfig], out: Path, device: str) -> None:  # pragma: no cover - needs a cluster
    try:
        import submitit
    except ImportError:
        raise UserError("the slurm executor needs submitit: pip install 'shortcut-bench[slurm]'") from None
    executor = submitit.AutoExecutor(folder=str(out / "slurm"))
    executor.update_parameters(timeout_min=24 * 60, gpus_per_node=1, slurm_array_parallelism=64)
    jobs = executor.map_array(run_one, [c.to_dict() for c in todo], [str(out)] * len(todo), [device] * len(todo))
    for job in jobs:
        job.result()
