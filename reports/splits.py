"""Split display labels and group presence. Which split plays which role is declared by each dataset
(``SplitRoles``, recorded with every run); nothing here infers a role from a name."""
from __future__ import annotations

from typing import Any

SPLIT_LABELS = {"val": "val", "iid": "IID", "ood": "OOD", "shift": "shift"}


def label(split: str) -> str:
    return SPLIT_LABELS.get(split, split)


def has_groups(columns: Any, split: str) -> bool:
    """Whether ``split`` has at least two groups (so that its worst-group accuracy says something)."""
    return sum(1 for col in columns if str(col).startswith(f"{split}_group_acc/")) >= 2
