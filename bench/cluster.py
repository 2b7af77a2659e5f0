"""Sweeps as cluster jobs through submitit: one job per run, each writing its own store shard.

``slurm`` submits to Slurm (``sbatch``); ``submitit-local`` runs the same jobs as local subprocesses through
submitit's local executor (pickled jobs, result files, requeue on preemption), which is how the tests
exercise this path and how a user checks it on a workstation. A preempted or timed-out job is requeued by
submitit and its run resumes from its last checkpoint. Every job writes only ``shards/<run id>.sqlite``
(seeded with its teacher's record), never the folder's store; the sweep merges each shard as its job ends.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UserError
from bench.runs import RunConfig
from bench.store import Store, merge_shards, shard_path

CLUSTERS = {"slurm": "slurm", "submitit-local": "local"}  # executor name → submitit's cluster name
USER_CONFIG = Path("~/.config/shortcut-bench/slurm.yaml")  # read when present; SHORTCUT_BENCH_SLURM overrides


@dataclass(frozen=True)
class SlurmOptions:
    """What a job asks the cluster for; the defaults suit a typical university GPU partition."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time_min: int = 12 * 60  # per job; a run that outlives it is requeued and resumes from its checkpoint
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    array_parallelism: int = 32  # jobs of the array running at once

    @classmethod
    def load(cls, config_file: Path | None = None, overrides: list[str] | None = None) -> SlurmOptions:
        """Defaults, then the user's config file (``config_file``, else $SHORTCUT_BENCH_SLURM, else
        ``USER_CONFIG`` when it exists), then ``overrides`` (``KEY=VALUE`` from the command line)."""
        options = cls()
        path = config_file or (Path(os.environ["SHORTCUT_BENCH_SLURM"]) if os.environ.get("SHORTCUT_BENCH_SLURM")
                               else USER_CONFIG.expanduser())
        if config_file is not None or path.exists():
            options = options.updated(_read_config(path), f"in {path}")
        pairs: dict[str, Any] = {}
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"--slurm takes KEY=VALUE, got {item!r}; valid keys: {', '.join(cls.keys())}")
            pairs[key.strip()] = value.strip()
        return options.updated(pairs, "in --slurm")

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def updated(self, values: dict[str, Any], where: str) -> SlurmOptions:
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in self.keys():
                raise UserError(f"unknown Slurm option {key!r} {where}; valid keys: {', '.join(self.keys())}")
            if isinstance(getattr(self, key), int):  # the whole-number options (the others are names or None)
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise UserError(f"Slurm option {key} {where} must be a whole number, got {value!r}") from None
                if value < (0 if key == "gpus_per_node" else 1):
                    raise UserError(f"Slurm option {key} {where} must be positive, got {value}")
            elif value is not None:
                value = str(value)
            changes[key] = value
        return replace(self, **changes)

    def submitit_parameters(self, cluster: str) -> dict[str, Any]:
        """The options as submitit's executor parameters (``slurm_*`` only where the cluster is Slurm)."""
        params: dict[str, Any] = {"timeout_min": self.time_min, "gpus_per_node": self.gpus_per_node,
                                  "cpus_per_task": self.cpus_per_task}
        if cluster == "slurm":
            params.update(mem_gb=self.mem_gb, slurm_array_parallelism=self.array_parallelism)
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(self, key) is not None:
                    params[f"slurm_{key}"] = getattr(self, key)
        return params


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read Slurm config {path} ({err.strerror}); fix the path or drop "
                        "--slurm-config") from None
    except yaml.YAMLError as err:
        raise UserError(f"Slurm config {path} is not valid YAML ({err}); fix it") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"Slurm config {path} must be a mapping of option: value; valid keys: "
                        f"{', '.join(SlurmOptions.keys())}")
    return raw


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("the cluster executors need submitit: pip install 'shortcut-bench[slurm]'") from None
    return submitit


class RunJob:
    """The job submitit pickles: calling it executes one run into its own shard. On preemption or timeout
    submitit calls ``checkpoint``, which requeues the same call; the run resumes from its last checkpoint."""

    def __call__(self, config: dict[str, Any], out: str, device: str, options: dict[str, bool]) -> str:
        from bench.sweep import run_one

        return run_one(config, out, device, shard=RunConfig.from_dict(config).run_id, **options)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)


def seed_shard(out: Path, cfg: RunConfig) -> None:
    """Create the run's shard with the records the run depends on (its teacher's), copied from the store."""
    store, shard = Store(out), Store(out, shard=cfg.run_id)
    try:
        if cfg.teacher is not None:
            teacher = store.raw(RunConfig.from_dict(cfg.teacher).run_id)
            if teacher is not None and shard.raw(teacher[0]["run_id"]) is None:
                shard.put_raw(*teacher)
    finally:
        store.close()
        shard.close()


def check_available(executor: str) -> None:
    """Refuse a cluster executor that cannot submit from here, before anything is written."""
    _submitit()
    if CLUSTERS[executor] == "slurm" and shutil.which("sbatch") is None:
        raise UserError("no Slurm here (sbatch not found); run the sweep on the cluster's login node, or use "
                        "--executor processes (this machine) or submitit-local (the job path, locally)")


def submit(todo: list[RunConfig], out: Path, device: str, options: dict[str, bool], executor: str,
           slurm: SlurmOptions) -> list[Any]:
    """Submit one job per run (a job array on Slurm); returns the jobs in ``todo``'s order."""
    check_available(executor)
    submitit = _submitit()
    cluster = CLUSTERS[executor]
    for cfg in todo:
        seed_shard(out, cfg)
    runner = submitit.AutoExecutor(folder=str(out / "jobs" / "%j"), cluster=cluster)
    runner.update_parameters(name="shortcut-bench", **slurm.submitit_parameters(cluster))
    job = RunJob()
    n = len(todo)
    return list(runner.map_array(job, [c.to_dict() for c in todo], [str(out)] * n, [device] * n, [options] * n))


def wait(jobs: list[Any], todo: list[RunConfig], out: Path, after: Callable[[RunConfig, str], None]) -> None:
    """As each job ends: merge its shard into the store, then ``after(config, status)``. A job that died
    (killed, out of memory) leaves its run resumable; the sweep goes on and reports it."""
    submitit = _submitit()
    by_job = {id(job): cfg for job, cfg in zip(jobs, todo, strict=True)}
    for job in submitit.helpers.as_completed(jobs, poll_frequency=1):
        cfg = by_job[id(job)]
        try:
            status = job.result()
        except Exception as err:  # noqa: BLE001 - one job's failure must not stop the sweep
            status = "failed"
            print(f"job {job.job_id} ({cfg.label()}) ended without a result: {str(err).splitlines()[0]}",
                  file=sys.stderr)
        merge_shards(out, only=[shard_path(out, cfg.run_id)])
        print(f"{cfg.label()}: {status}", file=sys.stderr)
        after(cfg, status)
