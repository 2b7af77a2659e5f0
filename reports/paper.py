"""Paper reference numbers (committed CSVs under ``results/paper/``) and the paper-vs-ours comparison."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
REFERENCE_COLUMNS = ["source", "method", "paper_method", "dataset", "paper_dataset", "split", "accuracy", "note"]


def load_reference(folder: Path = PAPER_DIR) -> pd.DataFrame:
    """Every reference CSV in ``folder`` concatenated (accuracy NaN where the paper writes N/A)."""
    frames = [pd.read_csv(path, dtype={"accuracy": float}, keep_default_na=False, na_values=[""])
              for path in sorted(folder.glob("*.csv"))]
    if not frames:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def comparison_rows(ours: pd.DataFrame, reference: pd.DataFrame, dataset: str,
                    splits: tuple[str, ...] = ("iid", "ood", "shift")) -> list[list[str]]:
    """One row per method present in both: for each split ``ours ± std``, ``paper`` and ``Δ = ours − paper``.

    ``ours`` holds aggregate rows (``<split>_acc_mean``/``_std`` in percent) of one dataset × protocol at
    one selection rule. Cells the paper marks N/A stay N/A with the paper's reason."""
    ref = reference[reference["dataset"] == dataset]
    rows: list[list[str]] = []
    for _, row in ours.sort_values("method").iterrows():
        paper = ref[ref["method"] == row["method"]]
        if paper.empty:
            continue
        cells = [row["method"], str(row["n_seeds"])]
        for split in splits:
            cells += _split_cells(row, paper[paper["split"] == split], split)
        rows.append(cells)
    return rows


def _split_cells(row: pd.Series, paper: pd.DataFrame, split: str) -> list[str]:
    mean, std = row.get(f"{split}_acc_mean"), row.get(f"{split}_acc_std")
    ours = "–" if pd.isna(mean) else f"{mean:.2f} ± {'n/a' if pd.isna(std) else f'{std:.2f}'}"
    if paper.empty:
        return [ours, "–", "–"]
    value, note = paper["accuracy"].iloc[0], str(paper["note"].iloc[0])
    if pd.isna(value):
        return [ours, f"N/A ({note})" if note else "N/A", "–"]
    delta = "–" if pd.isna(mean) else f"{mean - value:+.2f}"
    return [ours, f"{value:g}", delta]
