"""Supervision budgets by construction: every registered method trains through the real runner on a dataset
that has every field (labels, groups, masks, a debiased view) and reads exactly what its budget grants;
reading anything else fails loudly; no method is handed a test split."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.data import GRANTED_BY, GUARDED_FIELDS, BiasedDataset, Budget, BudgetViolation, Split, load_dataset
from bench.method import METHODS, MethodContext, build_method, get_method, list_methods, resolve_hparams
from bench.runner import execute
from bench.runs import make_run_config
from bench.store import Store
from methods.erm import ERM

DATA = "objects_on_scenes"  # labels, groups, object masks and a debiased view; its teacher sees the debiased view
OPTIONS = {"per_class_train": 16, "per_class_val": 8, "per_class_test": 8, "size": 32}
CPU = torch.device("cpu")


def fields_of(items: set[str]) -> set[str]:
    return {name for name, item in GRANTED_BY.items() if item in items}


@pytest.mark.parametrize("name", list_methods())
def test_method_trains_with_exactly_its_budget(name: str, tmp_path: Path) -> None:
    cls = get_method(name)
    cfg = make_run_config(name, DATA, "fast", 0, {"batch_size": 32}, OPTIONS, teacher_hparams={"batch_size": 32})
    record = execute(cfg, Store(tmp_path), CPU, progress=False)
    assert record["status"] == "finished", record["error"]
    granted, read = set(record["meta"]["granted_fields"]), set(record["meta"]["read_fields"])
    assert granted == fields_of(set(cls.requires)) | ({"x_debiased"} if "teacher" in cls.requires else set())
    assert read == granted, f"{name} was granted {sorted(granted)} and read {sorted(read)}"


@pytest.mark.parametrize("name", list_methods())
def test_every_field_outside_the_budget_is_refused(name: str) -> None:
    split = load_dataset(DATA, OPTIONS, 0).splits["train"]
    budget = Budget.of(name, get_method(name).requires, "x_debiased")
    batch = split.batch(torch.arange(4), budget=budget)
    for field in GUARDED_FIELDS:
        if field in budget.fields:
            assert getattr(batch, field) is not None
        else:
            with pytest.raises(BudgetViolation, match=f"batch.{field}"):
                getattr(batch, field)


class Cheat(ERM):
    """ERM that also reads the group labels it did not declare (for this test only)."""

    def step(self, batch):  # type: ignore[no-untyped-def]
        _ = batch.group
        return super().step(batch)


def run_unregistered(name: str, cls: type, folder: Path) -> dict:
    """One epoch of ``cls`` through the real runner, registered as ``name`` for this run only."""
    METHODS.register(name)(cls)
    try:
        cfg = make_run_config(name, DATA, "fast", 0, {"batch_size": 32, "epochs": 1}, OPTIONS)
        return execute(cfg, Store(folder), CPU, progress=False)
    finally:
        METHODS._entries.pop(name)


def test_a_method_reading_outside_its_budget_fails_loudly(tmp_path: Path) -> None:
    record = run_unregistered("cheat_erm", Cheat, tmp_path)
    assert record["status"] == "failed"
    assert "read batch.group" in record["error"] and "group_labels" in record["error"]


def test_a_method_is_handed_no_test_split() -> None:
    dataset = load_dataset(DATA, OPTIONS, 0)
    cls = get_method("neuron_diff")
    method = build_method(cls, resolve_hparams(cls, "fast", {"batch_size": 32}), dataset, "small_cnn", CPU, None)
    values = [getattr(method.ctx, f.name) for f in dataclasses.fields(MethodContext)]
    assert not any(isinstance(v, (BiasedDataset, Split)) for v in values)
    assert len(method.ctx.train) == len(dataset.splits["train"])
    assert len(method.ctx.val) == len(dataset.splits[dataset.roles.selection])
    with pytest.raises(BudgetViolation):
        next(method.ctx.train.batches(8)).group  # noqa: B018 - the read is the test


def test_validation_batches_are_budgeted_too(tmp_path: Path) -> None:
    class PeekingVal(ERM):
        def val_loss(self, batch):  # type: ignore[no-untyped-def]
            return F.cross_entropy(self.predict(batch.x), batch.y) + 0 * batch.mask.sum()

    record = run_unregistered("peek_erm", PeekingVal, tmp_path)
    assert record["status"] == "failed" and "read batch.mask" in record["error"]
