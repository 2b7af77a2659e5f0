"""MNIST-SC (ULE, Mitchell et al.): a label-dependent square patch on the image border, the shortcut."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import BiasedDataset, Split, register_dataset
from datasets.digits import (
    NO_SHORTCUT,
    SHORTCUT_GROUPS,
    SHORTCUT_ROLES,
    SHORTCUT_SPLITS,
    SMALL_DIGITS,
    DigitSource,
    RenderSplit,
    grey_to_rgb,
    shortcut_group,
    shortcut_splits,
)

NUM_CLASSES = 10
EDGE_COLUMNS = (0, 6, 12, 18, 24)  # five patch columns on the top edge, five on the bottom edge

CARD = """\
MNIST-SC (label-dependent patch shortcut, as in ULE). Grey MNIST digits (3 channels). A white
patch_size x patch_size square is stamped in the empty 4-pixel border at one of 10 positions, one per
class: classes 0-4 along the top edge (x = 0, 6, 12, 18, 24), classes 5-9 along the bottom edge. In
train/val/iid the patch sits at the class's position with probability `strength` (default 0.99),
otherwise at the position of a uniformly chosen other class. Test splits (MNIST test digits): iid (same
rule), shift (every patch at another class's position) and ood (no patch). bias = patch position id
(10 = no patch); group 0 = bias-aligned, 1 = bias-conflicting, 2 = no shortcut. mask = the patch's pixels
(the shortcut region). x_debiased (train/val): the same digit without a patch.
The exact ULE constants (patch size, positions, ratio) are not published; these are ours, following the
paper's description of "a label-dependent patch in a corner". Source: Mitchell et al., "UnLearning from
Experience to Avoid Spurious Correlations" (seed 002)."""



@register_dataset("mnist_sc")
class MNISTSC:
    """ULE's MNIST-SC (see ``card``)."""

    version = "1"
    card = CARD
    test_options = dict(SMALL_DIGITS)

    @dataclass
    class Config(DigitSource):
        strength: float = 0.99
        patch_size: int = 4

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 0.0 <= self.strength <= 1.0:
                raise ValueError(f"strength must be in [0, 1], got {self.strength}")
            if not 1 <= self.patch_size <= 4:
                raise ValueError(f"patch_size must be in 1..4 (the border of MNIST digits), got {self.patch_size}")

    @staticmethod
    def fingerprint(cfg: MNISTSC.Config) -> str:
        return cfg.fingerprint()

    @staticmethod
    def build(cfg: MNISTSC.Config, device: torch.device | str, seed: int) -> BiasedDataset:
        return build_mnist_sc(cfg, torch.device(device), seed)


def patch_masks(bias: Tensor, patch_size: int, device: torch.device) -> Tensor:
    """N×1×28×28 bool: the patch of position id ``bias`` (none for NO_SHORTCUT)."""
    table = torch.zeros(NO_SHORTCUT + 1, 1, 28, 28, dtype=torch.bool)
    for position in range(NUM_CLASSES):
        top = 0 if position < 5 else 28 - patch_size
        left = EDGE_COLUMNS[position % 5]
        table[position, 0, top:top + patch_size, left:left + patch_size] = True
    return table.to(device)[bias.to(device)]


def render(patch_size: int) -> RenderSplit:
    def make_split(digits: Tensor, y: Tensor, bias: Tensor, gen: torch.Generator, device: torch.device,
                   debiased: bool) -> Split:
        clean = grey_to_rgb(digits.to(device))
        mask = patch_masks(bias, patch_size, device)
        return Split(x=clean.masked_fill(mask, 255), y=y.to(device), bias=bias.to(device),
                     group=shortcut_group(y, bias).to(device), mask=mask, x_debiased=clean if debiased else None)
    return make_split


def build_mnist_sc(cfg: MNISTSC.Config, device: torch.device, seed: int) -> BiasedDataset:
    splits = shortcut_splits(cfg, cfg.strength, seed, device, render(cfg.patch_size))
    return BiasedDataset(
        name="mnist_sc", splits=splits, roles=SHORTCUT_ROLES, num_classes=NUM_CLASSES, class_names=cfg.class_names(),
        bias_kind="border patch", bias_strength=float(cfg.strength), split_descriptions=dict(SHORTCUT_SPLITS),
        group_names=dict(SHORTCUT_GROUPS), teacher_view="x", card=CARD, shortcut_region="mask",
    )
