"""The Fig. 4 checks of neuron differentiation's masks on hand-built epoch metrics."""
from __future__ import annotations

from typing import Any

import pytest

from reports.blocks import Table
from reports.differentiation import checks, decline_share, differentiation_blocks, layer_layout, mask_epochs

LAYERS = ("features_0", "features_3", "features_6", "fc")


def epoch(n: int, iou: dict[str, float], keep: dict[str, float], selectable: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"epoch": n, "selectable": selectable, "nd_iou": min(iou.values())}
    for layer in LAYERS:
        row[f"nd_iou_{layer}"] = iou[layer]
        row[f"nd_keep_a_{layer}"] = row[f"nd_keep_b_{layer}"] = keep[layer]
    return dict(sorted(row.items()))  # as stored records hold them


def paper_like() -> list[dict[str, Any]]:
    """Three mask epochs, a fine-tuning epoch that repeats the last, and a plain epoch before the loop."""
    keep = {"features_0": 0.8, "features_3": 0.6, "features_6": 0.4, "fc": 0.9}
    return [{"epoch": 1, "selectable": True},
            epoch(2, {"features_0": 0.9, "features_3": 0.8, "features_6": 0.7, "fc": 0.95}, keep),
            epoch(3, {"features_0": 0.8, "features_3": 0.6, "features_6": 0.5, "fc": 0.9}, keep),
            epoch(4, {"features_0": 0.7, "features_3": 0.4, "features_6": 0.3, "fc": 0.85}, keep),
            epoch(5, {"features_0": 0.7, "features_3": 0.4, "features_6": 0.3, "fc": 0.85}, keep, selectable=True)]


def test_mask_epochs_skip_plain_and_fine_tuning_epochs() -> None:
    assert [r["epoch"] for r in mask_epochs({"epochs": paper_like()})] == [2, 3, 4]


def test_layers_come_in_depth_order_with_their_kinds_whatever_the_recorded_order() -> None:
    layout = layer_layout("cnn3", sorted(LAYERS))  # records sort their keys: fc first
    assert list(layout.items()) == [("features_0", "conv"), ("features_3", "conv"), ("features_6", "conv"),
                                    ("fc", "linear")]


def test_checks_hold_on_paper_like_curves_and_fail_when_broken() -> None:
    rows = mask_epochs({"epochs": paper_like()})
    kinds = layer_layout("cnn3", list(LAYERS))
    assert [holds for _, holds, _ in checks(rows, kinds)] == [True, True, True, True]
    rows[-1]["nd_iou_features_6"] = 0.65  # deepest conv layer ends above the other conv layers
    rows[-1]["nd_keep_a_fc"] = rows[-1]["nd_keep_b_fc"] = 0.1  # linear layer keeps least
    assert [holds for _, holds, _ in checks(rows, kinds)] == [True, False, True, False]
    rows[-1]["nd_iou_features_6"] = 1.0
    assert not checks(rows, kinds)[0][1]


def test_decline_share() -> None:
    rows = mask_epochs({"epochs": paper_like()})
    # features_3: 1 → 0.8 → 0.6 → 0.4; after 2 of 3 mask epochs 0.4 of the 0.6 decline is done
    assert decline_share(rows, "features_3", 2) == pytest.approx(0.4 / 0.6)
    assert decline_share(rows, "features_3", 9) == pytest.approx(1.0)


def test_blocks_name_the_varying_dataset_parameter_only() -> None:
    records = [{"method": "neuron_diff", "dataset": "cmnist_lff", "model": "cnn3", "seed": 0, "epochs": paper_like(),
                "config": {"dataset_params": {"conflict_ratio": r, "train_size": 48000}}} for r in (0.05, 0.01)]
    tables = [b for b in differentiation_blocks(records) if isinstance(b, Table)]
    assert [row[0] for row in tables[0].rows[::4]] == ["cmnist_lff (conflict_ratio 0.01), seed 0",
                                                        "cmnist_lff (conflict_ratio 0.05), seed 0"]
    assert all(row[2] == "yes" for row in tables[1].rows)
    assert differentiation_blocks([{**records[0], "method": "erm"}]) == []
