"""Which teacher each student of a reproduction learnt from, checked against the committed teacher weights.

A student's record holds the SHA-256 of the teacher it was distilled from (``meta.teacher_sha256``); a
reproduction commits its small teachers' weights (``teachers/<run_id>.pt``). A student whose digest differs
from its committed teacher's learnt from another training of the same teacher config (e.g. on another
machine), which the table says rather than hides.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.artifacts import load_checkpoint, state_digest
from bench.runs import RunConfig
from reports.blocks import Block, Heading, Para, Table


def committed_digest(path: Path) -> str | None:
    state = load_checkpoint(path, torch.device("cpu")) if path.exists() else None
    return state_digest(state["model"]) if state is not None else None


def teacher_blocks(records: list[dict[str, Any]], checkpoint: Callable[[str], Path]) -> list[Block]:
    """One row per student run: its teacher run and whether it learnt from the committed teacher weights."""
    students = sorted((r for r in records if (r.get("config") or {}).get("teacher")),
                      key=lambda r: (r["dataset"], r["method"], r["seed"]))
    if not students:
        return []
    digests: dict[str, str | None] = {}
    body = []
    for run in students:
        teacher = RunConfig.from_dict(run["config"]["teacher"]).run_id
        if teacher not in digests:
            digests[teacher] = committed_digest(checkpoint(teacher))
        learnt = (run.get("meta") or {}).get("teacher_sha256")
        committed = digests[teacher]
        verdict = ("not recorded (the run predates teacher digests)" if learnt is None else
                   "no committed weights to compare" if committed is None else
                   "yes" if learnt == committed else "no: another training of the same teacher config")
        body.append([run["method"], str(run["seed"]), teacher, (learnt or "–")[:12], verdict])
    return [Heading(2, "Teachers"), Para(
        "Every student, the teacher run it was distilled from, the first 12 hex digits of the SHA-256 of the "
        "teacher weights it learnt from (from its record) and whether those are the committed teacher's "
        "(results/reproductions/<name>/teachers/)."),
        Table(["student", "seed", "teacher run", "teacher weights", "the committed teacher"], body, "teachers")]
