"""Registry-driven contract tests: every registered dataset family returns a well-formed BiasedDataset."""
from __future__ import annotations

import pytest
import torch

from bench.data import DATASETS, BiasedDataset, load_dataset


def build(name: str, seed: int = 0) -> BiasedDataset:
    return load_dataset(name, DATASETS.get(name).test_options, seed=seed)


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_contract(name: str) -> None:
    ds = build(name)
    assert {"train", "val"} <= set(ds.splits) and ds.test_splits, "train, val and at least one test split"
    assert set(ds.split_descriptions) == set(ds.splits)
    assert ds.card and ds.class_names and len(ds.class_names) == ds.num_classes
    assert ds.teacher_view in ("x", "x_debiased")
    channels, height, width = ds.image_shape
    for split_name, split in ds.splits.items():
        n = len(split)
        assert n > 0, split_name
        assert split.x.dtype == torch.uint8 and split.x.shape == (n, channels, height, width), split_name
        for label in (split.y, split.bias, split.group):
            assert label.dtype == torch.int64 and label.shape == (n,), split_name
        assert int(split.y.min()) >= 0 and int(split.y.max()) < ds.num_classes
        assert set(torch.unique(split.group).tolist()) <= set(ds.group_names), split_name
        if split.mask is not None:
            assert split.mask.dtype == torch.bool and split.mask.shape == (n, 1, height, width)
        if split.x_debiased is not None:
            assert split.x_debiased.shape == split.x.shape and split.x_debiased.dtype == torch.uint8
    if ds.teacher_view == "x_debiased":
        assert ds.splits["train"].x_debiased is not None


@pytest.mark.parametrize("name", DATASETS.names())
def test_split_roles_are_declared_and_consistent(name: str) -> None:
    """Every family declares what its splits are for; each has an oracle target, and every group id has a kind."""
    ds = build(name)
    roles = ds.roles
    assert roles.selection in roles.validation and set(roles.validation) | set(ds.test_splits) | {"train"} == \
        set(ds.splits)
    assert roles.oracle is not None and roles.headline is not None
    assert set(roles.group_kinds) == set(ds.group_names)
    assert roles.groups_of_kind("aligned") and roles.groups_of_kind("conflicting")
    for split in roles.shifted:  # a shifted split holds images whose shortcut disagrees with the label or is absent
        groups = set(torch.unique(ds.splits[split].group).tolist())
        assert groups - set(roles.groups_of_kind("aligned")), split


def test_roles_of_the_families_that_had_no_oracle() -> None:
    """LfF-style families and waterbirds-like used to get no oracle row (their split names were not 'ood')."""
    assert build("cmnist_lff").roles.oracle == "unbiased_acc"
    assert build("corrupted_objects").roles.oracle == "unbiased_acc"
    waterbirds = build("waterbirds_like").roles
    assert waterbirds.oracle == waterbirds.headline == "test_worst_group_acc"
    assert waterbirds.unbiased_val == "val_worst_group_acc"


def test_a_role_naming_a_missing_split_is_refused() -> None:
    import dataclasses

    ds = build("coloured_mnist")
    with pytest.raises(ValueError, match="unknown splits or metrics"):
        dataclasses.replace(ds, roles=dataclasses.replace(ds.roles, shifted=("nowhere",)))


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_is_deterministic_per_seed(name: str) -> None:
    a, b, c = build(name, 0), build(name, 0), build(name, 1)
    for split in a.splits:
        for field, tensor in a.splits[split].tensors().items():
            if tensor is not None:
                assert torch.equal(tensor, getattr(b.splits[split], field)), (split, field)
    assert not torch.equal(a.splits["train"].x, c.splits["train"].x)
