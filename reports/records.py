"""Run records (from a results store or exported JSON lines) as the frames the report and leaderboard use.

``method`` and ``dataset`` are always registry names; ``method_label`` and ``dataset_label`` are display
labels (``erm [lr=0.1]``, ``cmnist_lff [conflict_ratio=0.01]``) that tell variants apart: rows are grouped by
them and shown with them, and nothing parses them back. Each dataset label carries the split roles its
runs recorded (``roles``): which split is IID, shifted, the headline, the oracle's target."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.store import Store
from reports.variants import display_names

ID_COLUMNS = ["run_id", "method", "dataset", "method_label", "dataset_label", "protocol", "seed", "selection"]
RUN_COLUMNS = ID_COLUMNS[:-1]


@dataclass(frozen=True)
class ReportData:
    """Everything the report needs, read once."""

    finals: pd.DataFrame  # one row per (finished run, selection)
    costs: pd.DataFrame  # one row per finished run
    curves: pd.DataFrame  # one row per (finished run, epoch)
    runs: list[dict[str, Any]]  # finished runs with display labels (for budgets, parameters, galleries)
    failed: list[dict[str, Any]]
    n_unfinished: int
    roles: dict[str, dict[str, Any]]  # dataset label → the split roles its runs recorded
    unrecorded: list[str]  # finished runs without recorded split roles (older code): left out, listed
    folder: Path | None = None  # where the runs' artifacts are (None: records only, no galleries)


def read_store(results_dir: Path) -> ReportData:
    """Read all runs (the store's UserError when there is none) and the finished runs' epochs."""
    store = Store(results_dir, create=False)
    try:
        runs = store.runs()
        epochs = {run["run_id"]: store.epochs(run["run_id"]) for run in runs if run["status"] == "finished"}
    finally:
        store.close()
    return report_data(runs, epochs, store.folder)


def report_data(runs: list[dict[str, Any]], epochs: dict[str, list[dict[str, Any]]],
                folder: Path | None) -> ReportData:
    """Frames of run records (store rows or exported records) with display labels."""
    names = display_names(runs)
    runs = [{**run, "method_label": names[run["run_id"]][0], "dataset_label": names[run["run_id"]][1]}
            for run in runs]
    runs.sort(key=run_order)
    finished = [run for run in runs if run["status"] == "finished" and roles_of(run) is not None]
    return ReportData(
        finals=frame([final_row(run, sel, metrics)
                      for run in finished for sel, metrics in (run["final"] or {}).items()], ID_COLUMNS),
        costs=frame([{**identity(run), **(run["cost"] or {})} for run in finished], RUN_COLUMNS),
        curves=frame([{**identity(run), **epoch} for run in finished for epoch in epochs.get(run["run_id"], [])],
                     RUN_COLUMNS + ["epoch"]),
        runs=finished,
        failed=[run for run in runs if run["status"] == "failed"],
        n_unfinished=sum(run["status"] in ("pending", "running") for run in runs),
        roles={run["dataset_label"]: roles_of(run) for run in finished},  # type: ignore[misc]
        unrecorded=[run["run_id"] for run in runs if run["status"] == "finished" and roles_of(run) is None],
        folder=folder,
    )


def roles_of(run: dict[str, Any]) -> dict[str, Any] | None:
    return (run.get("meta") or {}).get("roles")


def is_teacher(run: dict[str, Any]) -> bool:
    """Whether the run trained a teacher artifact (recorded by the runner)."""
    return bool((run.get("meta") or {}).get("is_teacher"))


def test_splits(roles: dict[str, Any]) -> list[str]:
    """The IID split, then the shifted splits, in the dataset's declared order."""
    return [*([roles["iid"]] if roles.get("iid") else []), *roles["shifted"]]


def run_order(run: dict[str, Any]) -> tuple[str, str, str, int, str]:
    return run["dataset_label"], run["protocol"], run["method_label"], run["seed"], run["run_id"]


def identity(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in RUN_COLUMNS}


def final_row(run: dict[str, Any], selection: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {**identity(run), "selection": selection, **metrics}


def frame(rows: list[dict[str, Any]], leading: list[str]) -> pd.DataFrame:
    """A DataFrame with ``leading`` columns first, then the others in sorted order."""
    extra = sorted({key for row in rows for key in row} - set(leading))
    return pd.DataFrame(rows, columns=leading + extra)
