"""Split names: their order in tables and their display labels."""
from __future__ import annotations

from typing import Any

SPLIT_LABELS = {"val": "val", "iid": "IID", "ood": "OOD", "shift": "shift"}
# Known splits in display order: in-distribution first, then the split each family's papers report first
# (OOD / unbiased / the whole balanced test set), then the others. Unknown splits follow, sorted.
SPLIT_ORDER = ("val", "iid", "ood", "shift", "unbiased", "conflicting", "test", "test_ood", "test_id")


def splits_of(columns: Any, suffix: str = "_acc") -> list[str]:
    """Splits named by ``<split><suffix>`` columns, in ``SPLIT_ORDER`` first, then the others sorted."""
    found = {
        col[: -len(suffix)] for col in columns
        if col.endswith(suffix) and "/" not in col and not col.endswith("_worst_group" + suffix)
    }
    return [s for s in SPLIT_ORDER if s in found] + sorted(found - set(SPLIT_ORDER))


def label(split: str) -> str:
    return SPLIT_LABELS.get(split, split)


def has_groups(columns: Any, split: str) -> bool:
    """Whether ``split`` has at least two groups (so that its worst-group accuracy says something)."""
    return sum(1 for col in columns if str(col).startswith(f"{split}_group_acc/")) >= 2
