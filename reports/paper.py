"""Paper reference numbers (committed CSVs under ``results/paper/``) and the paper-vs-ours comparison.

A reference row is keyed on registry names and parameters: ``method`` (our method name), ``dataset`` (our
dataset family), ``dataset_params`` (JSON: the options a run must have for the row to apply, e.g.
``{"conflict_ratio": 0.01}``; ``{}``: any), ``split`` and ``metric`` (our split and metric names)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from reports.blocks import mean_std

PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
REFERENCE_COLUMNS = ["source", "method", "paper_method", "dataset", "dataset_params", "paper_dataset", "split",
                     "metric", "value", "note"]
METRIC_LABELS = {"acc": "acc.", "agreement": "agreement", "worst_group_acc": "worst group"}


def split_and_kind(metric: str) -> tuple[str, str]:
    """``test_worst_group_acc`` → (``test``, ``worst_group_acc``); ``ood_agreement`` → (``ood``, ``agreement``):
    the longest known metric kind (a reference row's ``metric``) that ends the name."""
    for kind in sorted(METRIC_LABELS, key=len, reverse=True):
        if metric.endswith(f"_{kind}"):
            return metric.removesuffix(f"_{kind}"), kind
    split, kind = metric.rsplit("_", 1)
    return split, kind


def load_reference(folder: Path = PAPER_DIR) -> pd.DataFrame:
    """Every reference CSV in ``folder`` concatenated, in ``REFERENCE_COLUMNS`` (value NaN where the paper
    writes N/A). ``metric`` is a suffix of our metric names (``acc``, ``agreement``, ...); files without a
    ``metric`` column hold accuracies (their value column may be called ``accuracy``)."""
    frames = []
    for path in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        frame = frame.rename(columns={"accuracy": "value"})
        if "metric" not in frame:
            frame["metric"] = "acc"
        frame["value"] = frame["value"].astype(float)
        frame["dataset_params"] = [json.loads(text) for text in frame["dataset_params"]]
        frames.append(frame[REFERENCE_COLUMNS])
    if not frames:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def applies(row_params: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether a reference row with ``row_params`` applies to runs with dataset options ``params``."""
    return all(key in params and params[key] == value for key, value in row_params.items())


def references_for(reference: pd.DataFrame, family: str, params: dict[str, Any]) -> pd.DataFrame:
    """The reference rows of dataset family ``family`` that apply to runs with dataset options ``params``."""
    rows = reference[reference["dataset"] == family]
    return rows.loc[[applies(p, params) for p in rows["dataset_params"]]]  # .loc: an empty mask keeps the columns


def reference_columns(ref: pd.DataFrame) -> list[tuple[str, str]]:
    """The (split, metric) pairs of reference rows ``ref``, in file order."""
    return list(dict.fromkeys(zip(ref["split"], ref["metric"], strict=True)))


def comparison_rows(ours: pd.DataFrame, ref: pd.DataFrame) -> list[list[str]]:
    """One row per method variant with a reference row: for each (split, metric) ``ours ± std``, ``paper`` and
    ``Δ = ours − paper``.

    ``ours`` holds aggregate rows (``<split>_<metric>_mean``/``_std`` in percent) of one dataset variant ×
    protocol at one selection rule; ``ref`` the reference rows that apply to it (``references_for``); rows are
    matched on the registry method name. Cells the paper marks N/A stay N/A with the paper's reason."""
    columns = reference_columns(ref)
    rows: list[list[str]] = []
    for _, row in ours.sort_values("method_label").iterrows():
        paper = ref[ref["method"] == row["method"]]
        if paper.empty:
            continue
        cells = [row["method_label"], str(row["n_seeds"])]
        for split, metric in columns:
            cells += _cells(row, paper[(paper["split"] == split) & (paper["metric"] == metric)], f"{split}_{metric}")
        rows.append(cells)
    return rows


def _cells(row: pd.Series, paper: pd.DataFrame, key: str) -> list[str]:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    ours = mean_std(mean, std)
    if paper.empty:
        return [ours, "–", "–"]
    value, note = paper["value"].iloc[0], str(paper["note"].iloc[0])
    if pd.isna(value):
        return [ours, f"N/A ({note})" if note else "N/A", "–"]
    delta = "–" if pd.isna(mean) else f"{mean - value:+.2f}"
    return [ours, f"{value:g}", delta]
