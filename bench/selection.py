"""Selection rules: named objects that pick one epoch of a run from its per-epoch records.

The same rule object decides the numbers every table reports and which checkpoint ``best.pt`` keeps
(DomainBed's ``model_selection.py`` idea, applied to epochs). One tie rule everywhere: among equally good
epochs the earliest wins. Epochs a method marks not selectable (``Method.selectable``, stored as the
``selectable`` flag of the epoch row) are never chosen.

- ``iid_val``: the lowest loss of the method's own objective on the biased validation split (the papers'
  rule; needs no unbiased data, works at 100 % bias). The default, and the rule of ``best.pt``.
- ``iid_val_acc``: the highest top-1 accuracy on the biased validation split (e²KD's rule: "best validation
  top-1 accuracy"); labels of validation data, read by the engine, not by the method.
- ``last``: the last selectable epoch.
- ``oracle``: the best value of the dataset's declared oracle metric (``SplitRoles.oracle``). On an OOD
  validation split it is a legitimate but privileged rule; on a test split it is an upper bound. Tables
  say which.
- ``unbiased_val``: the best value of a metric on a group-balanced validation split (``SplitRoles.unbiased_val``,
  e.g. Waterbirds' worst validation group): selection with group labels of validation data.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.data import SplitRoles
from bench.registry import Registry


@dataclass(frozen=True)
class SelectionRule:
    """``metric(roles)`` names the epoch-row key to optimise (None: the rule does not apply to the dataset);
    ``goal`` is "min", "max" or "last"."""

    name: str
    summary: str
    goal: str
    metric: Callable[[SplitRoles], str | None]

    def applies(self, roles: SplitRoles) -> bool:
        return self.goal == "last" or self.metric(roles) is not None

    def choose(self, history: list[dict[str, Any]], roles: SplitRoles) -> dict[str, Any] | None:
        """The chosen epoch row of ``history`` (rows in epoch order), or None (no selectable epoch, or the rule
        does not apply to this dataset)."""
        candidates = [row for row in history if row.get("selectable", True)]
        if not candidates or not self.applies(roles):
            return None
        if self.goal == "last":
            return candidates[-1]
        key = self.metric(roles)
        candidates = [row for row in candidates if key in row]  # a metric a run did not record: not chosen
        if not candidates:
            return None
        best = candidates[0]
        for row in candidates[1:]:
            if self.prefers(row, best, key):
                best = row
        return best

    def prefers(self, row: dict[str, Any], best: dict[str, Any], key: str) -> bool:
        """Whether a later epoch ``row`` replaces ``best``: strict improvement only, so the earliest of equal
        epochs wins (``goal`` "min" or "max")."""
        sign = 1.0 if self.goal == "min" else -1.0
        return sign * row[key] < sign * best[key]

    def describe(self, roles: SplitRoles, splits: list[str]) -> dict[str, Any]:
        """What the rule read on this dataset (stored with the run; tables print it)."""
        key = self.metric(roles) if self.goal != "last" else None
        on_test = key is not None and roles.on_test_split(key, splits)
        return {"metric": key, "goal": self.goal, "on_test_split": on_test, "summary": self.summary}


SELECTION_RULES: Registry[SelectionRule] = Registry("selection rule")
DEFAULT_RULE = "iid_val"


def register_rule(rule: SelectionRule) -> SelectionRule:
    return SELECTION_RULES.register(rule.name)(rule)


register_rule(SelectionRule("iid_val", "lowest loss of the method's objective on the biased validation split",
                            "min", lambda roles: "val_loss"))
register_rule(SelectionRule("iid_val_acc", "highest top-1 accuracy on the biased validation split", "max",
                            lambda roles: f"{roles.selection}_acc"))
register_rule(SelectionRule("last", "last selectable epoch", "last", lambda roles: None))
register_rule(SelectionRule("oracle", "best value of the dataset's oracle metric (an upper bound when it is a "
                            "test split)", "max", lambda roles: roles.oracle))
register_rule(SelectionRule("unbiased_val", "best value of a metric on a group-balanced validation split "
                            "(uses validation group labels)", "max", lambda roles: roles.unbiased_val))


class ValidationChoices:
    """The epoch each rule that reads only validation data chooses, kept up to date one epoch at a time (constant
    work per epoch, where ``SelectionRule.choose`` rescans the history: runs of 20,000 epochs exist). The runner
    keeps the untested states of these epochs and measures their test splits once training ends; ``oracle`` on a
    test split chooses among the epochs that were tested."""

    def __init__(self, roles: SplitRoles, splits: list[str], history: list[dict[str, Any]] = ()) -> None:
        self.rules: dict[str, tuple[SelectionRule, str]] = {}
        for name in SELECTION_RULES.names():
            rule = SELECTION_RULES.get(name)
            key = rule.metric(roles) if rule.goal != "last" else None
            if key is not None and not roles.on_test_split(key, splits):
                self.rules[name] = (rule, key)
        self.best: dict[str, dict[str, Any]] = {}
        for row in history:
            self.add(row)

    def _wins(self, name: str, row: dict[str, Any]) -> bool:
        rule, key = self.rules[name]
        if not row.get("selectable", True) or key not in row:
            return False
        return name not in self.best or rule.prefers(row, self.best[name], key)

    def would_choose(self, row: dict[str, Any]) -> bool:
        """Whether a rule would choose ``row`` (the newest epoch, with its validation metrics) if training ended
        after it."""
        return any(self._wins(name, row) for name in self.rules)

    def add(self, row: dict[str, Any]) -> None:
        for name in self.rules:
            if self._wins(name, row):
                self.best[name] = row

    def chosen(self, name: str) -> dict[str, Any] | None:
        return self.best.get(name)

    def epochs(self) -> set[int]:
        return {int(row["epoch"]) for row in self.best.values()}


def select_epochs(history: list[dict[str, Any]], roles: SplitRoles) -> dict[str, dict[str, Any]]:
    """Final metrics under every rule that applies to the dataset, from the per-epoch history."""
    chosen = {name: SELECTION_RULES.get(name).choose(history, roles) for name in SELECTION_RULES.names()}
    return {name: dict(row) for name, row in chosen.items() if row is not None}


def selection_meta(roles: SplitRoles, splits: list[str]) -> dict[str, dict[str, Any]]:
    return {name: SELECTION_RULES.get(name).describe(roles, splits) for name in SELECTION_RULES.names()
            if SELECTION_RULES.get(name).applies(roles)}
