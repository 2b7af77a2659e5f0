"""Run records (from a results store or exported JSON lines) as the frames the report and leaderboard use."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.store import Store
from reports.variants import display_names

ID_COLUMNS = ["run_id", "method", "dataset", "protocol", "seed", "selection"]


@dataclass(frozen=True)
class ReportData:
    """Everything the report needs, read once."""

    finals: pd.DataFrame  # one row per (finished run, selection)
    costs: pd.DataFrame  # one row per finished run
    curves: pd.DataFrame  # one row per (finished run, epoch)
    runs: list[dict[str, Any]]  # finished runs with display names (for budgets, parameters, galleries)
    failed: list[dict[str, Any]]
    n_unfinished: int
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
    """Frames of run records (store rows or exported records) with display names."""
    names = display_names(runs)
    runs = [{**run, "family": run["dataset"], "method": names[run["run_id"]][0], "dataset": names[run["run_id"]][1]}
            for run in runs]
    runs.sort(key=run_order)
    finished = [run for run in runs if run["status"] == "finished"]
    return ReportData(
        finals=frame([final_row(run, sel, metrics)
                      for run in finished for sel, metrics in (run["final"] or {}).items()], ID_COLUMNS),
        costs=frame([{**identity(run), **(run["cost"] or {})} for run in finished], ID_COLUMNS[:5]),
        curves=frame([{**identity(run), **epoch} for run in finished for epoch in epochs.get(run["run_id"], [])],
                     ID_COLUMNS[:5] + ["epoch"]),
        runs=finished,
        failed=[run for run in runs if run["status"] == "failed"],
        n_unfinished=sum(run["status"] in ("pending", "running") for run in runs),
        folder=folder,
    )


def run_order(run: dict[str, Any]) -> tuple[str, str, str, int, str]:
    return run["dataset"], run["protocol"], run["method"], run["seed"], run["run_id"]


def identity(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in ("run_id", "method", "dataset", "protocol", "seed")}


def final_row(run: dict[str, Any], selection: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {**identity(run), "selection": selection, **metrics}


def frame(rows: list[dict[str, Any]], leading: list[str]) -> pd.DataFrame:
    """A DataFrame with ``leading`` columns first, then the others in sorted order."""
    extra = sorted({key for row in rows for key in row} - set(leading))
    return pd.DataFrame(rows, columns=leading + extra)
