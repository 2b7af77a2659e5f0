"""Split names: their order in tables and their display labels."""
from __future__ import annotations

from typing import Any

SPLIT_LABELS = {"val": "val", "iid": "IID", "ood": "OOD", "shift": "shift"}
CURVE_SPLITS = ("val", "iid", "ood", "shift")


def splits_of(columns: Any, suffix: str = "_acc") -> list[str]:
    """Splits named by ``<split><suffix>`` columns: val, iid, ood, shift first, then the others sorted."""
    found = {
        col[: -len(suffix)] for col in columns
        if col.endswith(suffix) and "/" not in col and not col.endswith("_worst_group" + suffix)
    }
    return [s for s in CURVE_SPLITS if s in found] + sorted(found - set(CURVE_SPLITS))


def label(split: str) -> str:
    return SPLIT_LABELS.get(split, split)
