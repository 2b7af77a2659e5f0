"""Colored MNIST of LfF / DFA (Nam et al. 2020; Lee et al. 2021): the digit is painted in one of 10
colours, aligned with its class except for a small bias-conflicting fraction. The neuron-differentiation
paper's CMNIST."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import BiasedDataset, Split, register_dataset
from datasets.bias import ALIGNED_GROUPS, aligned_group, shuffled_block_bias, unbiased_test_roles
from datasets.digits import SMALL_DIGITS, DigitSource, digit_pools

NUM_CLASSES = 10
# LfF's data/resource/colors.th (RGB in [0, 1]), bias id k = the colour aligned with digit k
LFF_PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.9837, 0.3125, 0.1686), (0.9905, 0.9156, 0.3515), (0.6730, 0.4611, 0.5798), (0.7833, 0.8316, 0.6013),
    (0.0880, 0.7780, 0.9818), (0.3214, 0.9611, 0.4464), (0.0246, 0.2357, 0.7587), (0.5552, 0.1016, 0.7618),
    (0.2077, 0.3929, 0.0187), (0.8337, 0.2024, 0.2669),
)
SEVERITY_STD = {1: 0.05, 2: 0.02, 3: 0.01, 4: 0.005}  # LfF's per-image colour jitter σ by severity
PAPER_RATIOS = (0.005, 0.01, 0.02, 0.05)

CARD = """\
CMNIST (LfF/DFA protocol; foreground-colour shortcut at a small bias-conflicting ratio). Each grey MNIST
digit is multiplied by one RGB colour, clamp(palette[b] + e, 0, 1) with e ~ N(0, colour_std^2) drawn once
per image (LfF severity 4: colour_std 0.005), so strokes keep their grey-level anti-aliasing and the
background stays black. Palette: LfF's 10 colours (data/resource/colors.th). Bias assignment is LfF's
deterministic block rule on a per-seed shuffle: in each class a fraction 1 - conflict_ratio takes the
class colour and conflict_ratio is spread evenly over the other 9 colours (the ND paper: 0.5 / 1 / 2 / 5 %).
Splits: MNIST train shuffled per seed -> train (48,000) and val (12,000, same ratio; biased, for
selection); MNIST test -> iid (same ratio as train), unbiased (LfF's test: colour uniform over the 10,
independent of the digit, block rule with p = 0.1) and conflicting (the unbiased split's images whose
colour is not their class colour, 90 %). bias = colour id; group 0 = bias-aligned, 1 = bias-conflicting.
x_debiased (train/val): the same digit in a uniformly random colour.
Sources: Nam et al., "Learning from Failure" (NeurIPS 2020), make_dataset.py; Lee et al., "Learning
Debiased Representation via Disentangled Feature Augmentation" (NeurIPS 2021); the neuron-differentiation
paper (seed 003), Table 1 CMNIST rows."""

SPLIT_DESCRIPTIONS = {
    "train": "biased training set: class colour except a conflict_ratio fraction",
    "val": "biased validation set (same ratio as train), used for model selection",
    "iid": "MNIST test digits, same ratio as train",
    "unbiased": "MNIST test digits, colour uniform and independent of the digit (LfF's test set)",
    "conflicting": "the unbiased split's bias-conflicting images (colour differs from the class colour)",
}


@register_dataset("cmnist_lff")
class CMNISTLfF:
    """LfF/DFA Colored MNIST (see ``card``)."""

    version = "1"
    card = CARD
    test_options = {**SMALL_DIGITS, "conflict_ratio": 0.05}

    @dataclass
    class Config(DigitSource):
        conflict_ratio: float = 0.01
        colour_std: float = SEVERITY_STD[4]

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 0.0 <= self.conflict_ratio <= 0.9:
                raise ValueError(f"conflict_ratio must be in [0, 0.9], got {self.conflict_ratio}")
            if self.colour_std < 0:
                raise ValueError(f"colour_std must be >= 0, got {self.colour_std}")

    @staticmethod
    def fingerprint(cfg: CMNISTLfF.Config) -> str:
        return cfg.fingerprint()

    @staticmethod
    def build(cfg: CMNISTLfF.Config, device: torch.device | str, seed: int) -> BiasedDataset:
        return build_cmnist_lff(cfg, torch.device(device), seed)


def colourise(digits: Tensor, colours: Tensor, device: torch.device) -> Tensor:
    """Grey digits (N×28×28 uint8) times per-image RGB colours in [0, 1] (N×3) → N×3×28×28 uint8."""
    grey = digits.to(device).float().unsqueeze(1)
    return (grey * colours.to(device)[:, :, None, None]).round_().clamp_(0, 255).to(torch.uint8)


def jittered(bias: Tensor, std: float, gen: torch.Generator) -> Tensor:
    """LfF's colour of each image: clamp(palette[bias] + ε, 0, 1), one ε ~ N(0, std²) per image."""
    palette = torch.tensor(LFF_PALETTE)
    return (palette[bias] + std * torch.randn(len(bias), 3, generator=gen)).clamp(0, 1)


def make_split(digits: Tensor, y: Tensor, bias: Tensor, cfg: CMNISTLfF.Config, gen: torch.Generator,
               device: torch.device, debiased: bool = False) -> Split:
    random_colours = torch.rand(len(y), 3, generator=gen) if debiased else None
    return Split(
        x=colourise(digits, jittered(bias, cfg.colour_std, gen), device),
        y=y.to(device), bias=bias.to(device), group=aligned_group(y, bias).to(device),
        x_debiased=None if random_colours is None else colourise(digits, random_colours, device),
    )


def build_cmnist_lff(cfg: CMNISTLfF.Config, device: torch.device, seed: int) -> BiasedDataset:
    gen = torch.Generator().manual_seed(seed)
    pools = digit_pools(cfg, gen)
    aligned = 1.0 - cfg.conflict_ratio

    def assign(y: Tensor, fraction: float) -> Tensor:
        return shuffled_block_bias(y, NUM_CLASSES, fraction, gen)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = pools.train, pools.val, pools.test
    unbiased_bias = assign(test_y, 1.0 / NUM_CLASSES)
    unbiased = make_split(test_x, test_y, unbiased_bias, cfg, gen, device)
    conflicting = (unbiased_bias != test_y).nonzero().flatten().to(device)
    splits = {
        "train": make_split(train_x, train_y, assign(train_y, aligned), cfg, gen, device, True),
        "val": make_split(val_x, val_y, assign(val_y, aligned), cfg, gen, device, True),
        "iid": make_split(test_x, test_y, assign(test_y, aligned), cfg, gen, device),
        "unbiased": unbiased,
        "conflicting": unbiased.map(lambda t: t[conflicting]),
    }
    return BiasedDataset(
        name="cmnist_lff", splits=splits, roles=unbiased_test_roles(),
        num_classes=NUM_CLASSES, class_names=cfg.class_names(),
        bias_kind="foreground colour", bias_strength=aligned, split_descriptions=dict(SPLIT_DESCRIPTIONS),
        group_names=dict(ALIGNED_GROUPS), teacher_view="x", card=CARD,
    )
