"""Paper reference numbers (committed CSVs under ``results/paper/``) and the paper-vs-ours comparison."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.blocks import mean_std

PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
REFERENCE_COLUMNS = ["source", "method", "paper_method", "dataset", "paper_dataset", "split", "metric", "value",
                     "note"]
METRIC_LABELS = {"acc": "acc.", "agreement": "agreement", "worst_group_acc": "worst group"}


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
        frames.append(frame[REFERENCE_COLUMNS])
    if not frames:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def reference_columns(reference: pd.DataFrame, dataset: str) -> list[tuple[str, str]]:
    """The (split, metric) pairs the reference gives for ``dataset``, in file order."""
    ref = reference[reference["dataset"] == dataset]
    return list(dict.fromkeys(zip(ref["split"], ref["metric"], strict=True)))


def comparison_rows(ours: pd.DataFrame, reference: pd.DataFrame, dataset: str,
                    columns: list[tuple[str, str]] | None = None) -> list[list[str]]:
    """One row per method present in both: for each (split, metric) ``ours ± std``, ``paper`` and
    ``Δ = ours − paper``.

    ``ours`` holds aggregate rows (``<split>_<metric>_mean``/``_std`` in percent) of one dataset × protocol
    at one selection rule. Cells the paper marks N/A stay N/A with the paper's reason."""
    ref = reference[reference["dataset"] == dataset]
    columns = columns if columns is not None else reference_columns(reference, dataset)
    rows: list[list[str]] = []
    for _, row in ours.sort_values("method").iterrows():
        paper = ref[ref["method"] == row["method"]]
        if paper.empty:
            continue
        cells = [row["method"], str(row["n_seeds"])]
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
