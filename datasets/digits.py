"""The digit pools shared by the MNIST-based families: MNIST (embedded or a user's files) split into
train / val / test, with every random choice drawn on a CPU generator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from bench.data import Split, SplitRoles
from bench.errors import UserError
from datasets.bias import bernoulli_bias, random_other
from datasets.image_sources import FASHION_CLASSES, fashion_mnist_fingerprint, load_fashion_mnist
from datasets.mnist_source import SOURCES, load_mnist, source_fingerprint

TRAIN_POOL, TEST_POOL = 60000, 10000
DIGIT_SOURCES = (*SOURCES, "fashion_mnist")  # fashion_mnist: a user's Fashion-MNIST files in place of the digits
STROKE_THRESHOLD = 127  # pixel > 127 (intensity > 0.5) is stroke: the digit's mask


@dataclass
class DigitSource:
    """Where the digits come from and how many go to each split (train and val from MNIST's training
    set, shuffled per seed; test splits from MNIST's test set). ``source``: ``embedded`` (the MNIST copy in
    the project), ``torchvision`` (a user's MNIST files under ``root``/MNIST/raw) or ``fashion_mnist`` (a
    user's Fashion-MNIST files under ``root``/FashionMNIST/raw, same format and sizes)."""

    source: str = "embedded"
    root: str | None = None
    download: bool = False
    train_size: int = 48000
    val_size: int = 12000
    test_size: int = 10000

    def __post_init__(self) -> None:
        if self.source not in DIGIT_SOURCES:
            raise ValueError(f"source must be one of {', '.join(DIGIT_SOURCES)}, got {self.source!r}")
        if self.source != "embedded" and not self.root:
            raise ValueError(f"source={self.source} needs root=<folder holding MNIST/raw or FashionMNIST/raw>")
        if self.download and self.source == "embedded":
            raise ValueError("download=true only applies to source=torchvision or fashion_mnist")
        for name in ("train_size", "val_size", "test_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.train_size + self.val_size > TRAIN_POOL:
            raise ValueError(f"train_size + val_size must be at most {TRAIN_POOL}, "
                             f"got {self.train_size + self.val_size}")
        if self.test_size > TEST_POOL:
            raise ValueError(f"test_size must be at most {TEST_POOL}, got {self.test_size}")

    def fingerprint(self) -> str:
        if self.source == "fashion_mnist":
            return fashion_mnist_fingerprint(str(self.root))
        return source_fingerprint(self.source, self.root)

    def class_names(self) -> list[str]:
        return list(FASHION_CLASSES) if self.source == "fashion_mnist" else [str(k) for k in range(10)]

    def load(self) -> dict[str, Tensor]:
        if self.source == "fashion_mnist":
            return load_fashion_mnist(str(self.root), self.download)
        return load_mnist(self.source, self.root, self.download)


@dataclass
class DigitPools:
    """Grey digits (N×28×28 uint8) and labels (N int64) of each part."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


SMALL_DIGITS = {"train_size": 512, "val_size": 256, "test_size": 256}  # contract-test sizes


def digit_pools(cfg: DigitSource, gen: torch.Generator) -> DigitPools:
    """Shuffle MNIST's training set with ``gen`` and cut train and val from it; the test part is MNIST's
    test set in its own order."""
    mnist = cfg.load()
    pool, test_n = mnist["train_images"].shape[0], mnist["test_images"].shape[0]
    if cfg.train_size + cfg.val_size > pool or cfg.test_size > test_n:
        raise UserError(f"MNIST ({cfg.source}) has {pool} train / {test_n} test images, too few for "
                        f"train_size+val_size={cfg.train_size + cfg.val_size}, test_size={cfg.test_size}")
    order = torch.randperm(pool, generator=gen)
    images, labels = mnist["train_images"][order], mnist["train_labels"][order]
    train, val = slice(0, cfg.train_size), slice(cfg.train_size, cfg.train_size + cfg.val_size)
    test = slice(0, cfg.test_size)
    return DigitPools(train=(images[train], labels[train]), val=(images[val], labels[val]),
                      test=(mnist["test_images"][test], mnist["test_labels"][test]))


def stroke_mask(digits: Tensor) -> Tensor:
    """N×1×28×28 bool: the digit's strokes."""
    return (digits > STROKE_THRESHOLD).unsqueeze(1)


def grey_to_rgb(digits: Tensor) -> Tensor:
    """N×28×28 uint8 → N×3×28×28 uint8 (the grey image in every channel)."""
    return digits.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


class RenderSplit(Protocol):
    def __call__(self, digits: Tensor, y: Tensor, bias: Tensor, gen: torch.Generator, device: torch.device,
                 debiased: bool) -> Split: ...


NO_SHORTCUT = 10  # bias id of images that carry no shortcut (the ``ood`` split of the shortcut families)
SHORTCUT_GROUPS = {0: "bias-aligned", 1: "bias-conflicting", 2: "no shortcut"}
SHORTCUT_ROLES = SplitRoles(selection="val", validation=("val",), iid="iid", shifted=("ood", "shift"),
                            oracle="ood_acc", headline="ood_acc",
                            group_kinds={0: "aligned", 1: "conflicting", 2: "neutral"})
SHORTCUT_SPLITS = {
    "train": "shortcut of the image's class with probability strength, else of a uniformly chosen other class",
    "val": "as train, used for model selection",
    "iid": "MNIST test digits, same rule as train",
    "shift": "MNIST test digits with another class's shortcut (all bias-conflicting)",
    "ood": "MNIST test digits without the shortcut",
}


def shortcut_group(y: Tensor, bias: Tensor) -> Tensor:
    """0 bias-aligned, 1 bias-conflicting, 2 no shortcut (bias == NO_SHORTCUT)."""
    return torch.where(bias == NO_SHORTCUT, 2, (bias != y).long())


def shortcut_splits(cfg: DigitSource, strength: float, seed: int, device: torch.device,
                    render: RenderSplit) -> dict[str, Split]:
    """train/val/iid (class shortcut with probability ``strength``), shift (another class's) and ood (none),
    for a family whose shortcut id per image is its ``bias`` (0..9, NO_SHORTCUT) and which ``render``s it."""
    gen = torch.Generator().manual_seed(seed)
    pools = digit_pools(cfg, gen)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = pools.train, pools.val, pools.test
    classes = NO_SHORTCUT
    return {
        "train": render(train_x, train_y, bernoulli_bias(train_y, classes, strength, gen), gen, device, True),
        "val": render(val_x, val_y, bernoulli_bias(val_y, classes, strength, gen), gen, device, True),
        "iid": render(test_x, test_y, bernoulli_bias(test_y, classes, strength, gen), gen, device, False),
        "shift": render(test_x, test_y, random_other(test_y, classes, gen), gen, device, False),
        "ood": render(test_x, test_y, torch.full_like(test_y, NO_SHORTCUT), gen, device, False),
    }
