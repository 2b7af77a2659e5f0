"""Planning a sweep (``sweep --dry-run``, ``--max-hours``): which runs are still to do, what each costs on this
device, and what fits in a budget.

A run's cost comes from the best evidence there is, named in the plan:
- ``measured``: finished runs of the same recipe (its config but the seed) on this kind of device, from the
  results folder or the committed records: the median of their wall-clock time;
- ``perf``: a few timed training steps of the run's method at its batch size on this device (as
  ``run_bench.py perf``), times the run's steps, plus its evaluations timed as forward passes of the
  evaluated splits (the explanation probe's maps are not counted).

Trimming keeps runs in a stated order, teachers first, then by seed (every method at seed 0, then seed 1, ...)
and the suite's method order within a seed, and stops at the first run that does not fit: later seeds are
left out before methods are.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from bench.config import canonical_json
from bench.errors import UserError
from bench.fingerprint import code_fingerprint
from bench.method import get_method, resolve_hparams
from bench.models import create_model
from bench.perf import measure
from bench.runner import Prepared, settled
from bench.runs import TEACHER_METHOD, RunConfig

TIMED_STEPS = 3


@dataclass(frozen=True)
class PlannedRun:
    config: RunConfig
    state: str  # "finished" | "failed" (kept) | "to run" | "stale" (finished by other code: to run) | "resume"
    done_epochs: int
    seconds: float  # estimated seconds still to spend on it (0 when settled)
    source: str  # where the estimate comes from


def recipe(config: dict[str, Any]) -> str:
    """A run's config without its seed: runs of one recipe cost the same."""
    return canonical_json({k: v for k, v in config.items() if k not in ("seed", "teacher")})


def device_kind(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpu"


def plan_sweep(configs: list[RunConfig], known: list[dict[str, Any]], epochs_done: dict[str, int],
               device: torch.device, retry_failed: bool = False, reuse_stale: bool = False) -> list[PlannedRun]:
    """The plan of ``configs``: ``known`` are run records (the results folder's and committed ones; the folder's
    first, each run's record decides whether it is settled); ``epochs_done`` the epochs a run has recorded."""
    by_id: dict[str, dict[str, Any]] = {}
    for record in known:
        by_id.setdefault(record["run_id"], record)
    measured = _measured(known, device_kind(device))
    timed: dict[str, tuple[float, str]] = {}
    planned = []
    for cfg in configs:
        record = by_id.get(cfg.run_id)
        if settled(record, cfg, retry_failed, reuse_stale, quiet=True):
            assert record is not None
            planned.append(PlannedRun(cfg, record["status"], epochs_done.get(cfg.run_id, 0), 0.0, "done"))
            continue
        key = recipe(cfg.to_dict())
        if key not in timed:
            timed[key] = ((statistics.median(measured[key]), f"measured ({len(measured[key])} runs)")
                          if key in measured else (_timed(cfg, device), "perf"))
        seconds, source = timed[key]
        total = resolve_hparams(get_method(cfg.method), cfg.protocol, cfg.hparams).epochs
        done = min(epochs_done.get(cfg.run_id, 0), total) if record is not None and _same_code(record, cfg) else 0
        state = "resume" if done else "stale" if record is not None and record["status"] == "finished" else "to run"
        planned.append(PlannedRun(cfg, state, done, seconds * (total - done) / total, source))
    return planned


def _same_code(record: dict[str, Any], cfg: RunConfig) -> bool:
    return record.get("code") == code_fingerprint(cfg.to_dict())


def _measured(records: list[dict[str, Any]], kind: str) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for record in records:
        cost = record.get("cost") or {}
        if record.get("status") == "finished" and str(cost.get("device", "")).split(":")[0] == kind \
                and cost.get("wall_seconds"):
            found.setdefault(recipe(record["config"]), []).append(float(cost["wall_seconds"]))
    return found


def _timed(cfg: RunConfig, device: torch.device) -> float:
    """Seconds of a whole run from ``TIMED_STEPS`` timed training steps and timed evaluation forwards."""
    prepared = Prepared(cfg, device)
    dataset, hp = prepared.dataset, prepared.hp
    train = len(dataset.splits["train"])
    batch = min(hp.batch_size, max(1, train // 4))
    teacher_model = cfg.teacher["model"] if cfg.teacher else None
    step = measure(cfg.method, dataset, cfg.protocol, device, steps=TIMED_STEPS, batch_size=batch,
                   hparams=cfg.hparams, model=cfg.model, teacher_model=teacher_model)
    train_seconds = hp.epochs * (train // hp.batch_size) * hp.batch_size / step.images_per_second
    validations = -(-hp.epochs // hp.eval_every)
    tests = -(-validations // hp.test_every)  # a lower bound: epochs a rule could choose are tested too
    images = (validations * sum(len(dataset.splits[name]) for name in dataset.roles.validation)
              + tests * sum(len(dataset.splits[name]) for name in dataset.test_splits))
    return train_seconds + images / _forward_rate(cfg, dataset, device)


def _forward_rate(cfg: RunConfig, dataset: Any, device: torch.device) -> float:
    """Images/s of the run's model in evaluation (no gradient)."""
    model = create_model(cfg.model, dataset.num_classes, dataset.image_shape[0]).to(device).eval()
    x = dataset.splits["train"].batch(torch.arange(min(256, len(dataset.splits["train"])), device=device),
                                      ("x",)).x
    with torch.no_grad():
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        for _ in range(TIMED_STEPS):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return TIMED_STEPS * len(x) / max(time.perf_counter() - begin, 1e-9)


def trim(planned: list[PlannedRun], max_hours: float, order: list[str]) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """(kept, left out): runs still to do, teachers first, then by seed and by ``order`` (the suite's methods),
    kept while their estimates add up to at most ``max_hours``; settled runs are always kept (they cost 0)."""
    if not max_hours > 0:
        raise UserError(f"--max-hours must be a positive number of hours, got {max_hours}")
    rank = {method: i for i, method in enumerate(order)}
    todo = sorted((p for p in planned if p.seconds > 0), key=lambda p: (
        p.config.method != TEACHER_METHOD, p.config.seed, rank.get(p.config.method, len(rank))))
    budget, kept, left = max_hours * 3600, [p for p in planned if p.seconds == 0], []
    for p in todo:
        if not left and p.seconds <= budget:
            budget -= p.seconds
            kept.append(p)
        else:
            left.append(p)
    return kept, left


def format_plan(planned: list[PlannedRun], device: torch.device, left_out: list[PlannedRun] | None = None) -> str:
    unit = "GPU" if device.type == "cuda" else "CPU"
    lines = [f"{'run':<60} {'state':<14} {'hours':>7}  estimate from"]
    for p in planned:
        state = f"resume {p.done_epochs}" if p.state == "resume" else p.state
        lines.append(f"{p.config.run_id:<60} {state:<14} {p.seconds / 3600:>7.2f}  {p.source}")
    total = sum(p.seconds for p in planned) / 3600
    todo = sum(p.seconds > 0 for p in planned)
    lines.append(f"{todo} runs to do of {len(planned)}: about {total:.2f} {unit}-hours on this device "
                 f"({device}; one run at a time)")
    for p in left_out or []:
        lines.append(f"left out (over --max-hours): {p.config.run_id} ({p.seconds / 3600:.2f} h)")
    return "\n".join(lines)
