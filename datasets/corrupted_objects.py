"""Corrupted objects: the Corrupted CIFAR-10 design of LfF (Nam et al. 2020): each class tied to one
corruption type, except a small bias-conflicting fraction. Over a user's CIFAR-10 files, or offline over
emoji object sprites of the CIFAR-10 classes on procedural scenes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import BiasedDataset, Split, register_dataset
from datasets.bias import ALIGNED_GROUPS, aligned_group, shuffled_block_bias, unbiased_test_roles
from datasets.corruptions import LFF_TYPE0, corrupt
from datasets.image_sources import CIFAR10_CLASSES, cifar10_fingerprint, load_cifar10
from datasets.pasted import CHUNK, Placement, SpriteClasses, render_objects, to_uint8
from datasets.scenes import SCENE_CATEGORIES, render_scenes
from datasets.sprites import composite, sprites_in_group

NUM_CLASSES = 10
SOURCES = ("sprites", "cifar10")
SPRITE_GROUPS = ("airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "boat", "truck")  # CIFAR order
CIFAR_TRAIN, CIFAR_TEST = 50000, 10000

CARD = """\
CORRUPTED OBJECTS (texture/corruption shortcut at a small bias-conflicting ratio; the Corrupted CIFAR-10
design of LfF, Type 0). 10 classes in CIFAR-10's order; class k is tied to corruption k of: snow, frost,
fog, brightness, contrast, spatter, elastic, JPEG, pixelate, saturate (level 1-5, default 5 = LfF's
"Severity4"). Bias assignment is LfF's deterministic block rule on a per-seed shuffle: a fraction
1 - conflict_ratio of each class takes its class's corruption, conflict_ratio is spread evenly over the
other 9 (LfF/DFA/ND use 0.5 / 1 / 2 / 5 %). Images: source=cifar10 reads a user's CIFAR-10 files (any of
torchvision's python batches, the binary batches, or class folders; root=<folder>): train and val (held
out, same ratio) from CIFAR-10's training set shuffled per seed, the test splits from its test set. The
offline default, source=sprites, pastes an emoji sprite of the class (airplane, car, bird, cat, deer, dog,
frog, horse, ship, truck) at random scale, position, rotation, flip and colour jitter on a procedural scene
of a random category (independent of the class), 32 x 32; its mask is the object's pixels. Splits: train,
val, iid (test images, same ratio as train), unbiased (corruption uniform and independent of the class,
LfF's test set) and conflicting (the unbiased split's images whose corruption is not their class's).
bias = corruption id; group 0 = bias-aligned, 1 = bias-conflicting. x_debiased (train/val): the clean
image. The corruptions are our torch implementations of the CIFAR-10-C families (datasets/corruptions.py;
snow, frost and spatter use procedural textures). Sources: Nam et al., "Learning from Failure" (NeurIPS
2020); Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions" (ICLR 2019)."""

SPLIT_DESCRIPTIONS = {
    "train": "class corruption except a conflict_ratio fraction",
    "val": "biased validation set (same ratio as train), used for model selection",
    "iid": "test images, same ratio as train",
    "unbiased": "test images, corruption uniform and independent of the class (LfF's test set)",
    "conflicting": "the unbiased split's bias-conflicting images",
}


@register_dataset("corrupted_objects")
class CorruptedObjects:
    """LfF's Corrupted CIFAR-10 design (see ``card``)."""

    version = "1"
    card = CARD
    test_options = {"train_size": 200, "val_size": 60, "test_size": 100, "conflict_ratio": 0.05}

    @dataclass
    class Config:
        source: str = "sprites"
        root: str | None = None
        download: bool = False
        conflict_ratio: float = 0.01
        level: int = 5
        train_size: int = 45000
        val_size: int = 5000
        test_size: int = 10000

        def __post_init__(self) -> None:
            if self.source not in SOURCES:
                raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
            if self.source == "cifar10" and not self.root:
                raise ValueError("source=cifar10 needs root=<folder with CIFAR-10 files>")
            if self.download and self.source != "cifar10":
                raise ValueError("download=true only applies to source=cifar10")
            if not 0.0 <= self.conflict_ratio <= 0.9:
                raise ValueError(f"conflict_ratio must be in [0, 0.9], got {self.conflict_ratio}")
            if not 1 <= self.level <= 5:
                raise ValueError(f"level must be in 1..5, got {self.level}")
            for name in ("train_size", "val_size", "test_size"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
            if self.source == "cifar10" and (self.train_size + self.val_size > CIFAR_TRAIN
                                             or self.test_size > CIFAR_TEST):
                raise ValueError(f"CIFAR-10 has {CIFAR_TRAIN} training and {CIFAR_TEST} test images: "
                                 "lower train_size + val_size or test_size")

    @staticmethod
    def fingerprint(cfg: CorruptedObjects.Config) -> str:
        return cifar10_fingerprint(str(cfg.root)) if cfg.source == "cifar10" else "sprites"

    @staticmethod
    def build(cfg: CorruptedObjects.Config, device: torch.device | str, seed: int) -> BiasedDataset:
        return build_corrupted_objects(cfg, torch.device(device), seed)


@dataclass
class Images:
    """Clean uint8 images (N×3×32×32) with labels and, for sprites, object masks."""

    x: Tensor
    y: Tensor
    mask: Tensor | None = None

    def part(self, index: slice) -> Images:
        return Images(self.x[index], self.y[index], None if self.mask is None else self.mask[index])


def sprite_images(n: int, gen: torch.Generator, device: torch.device) -> Images:
    """``n`` class-balanced sprite images on random scenes."""
    sprites = SpriteClasses([sprites_in_group(g) for g in SPRITE_GROUPS], 32, device)
    y = torch.arange(n) % NUM_CLASSES
    y = y[torch.randperm(n, generator=gen)]
    placement = Placement(scale_range=(0.65, 0.95), max_shift=0.12)
    xs, masks = [], []
    for start in range(0, n, CHUNK):
        part = y[start:start + CHUNK]
        rgb, alpha = render_objects(sprites, sprites.pick(part, gen), gen, 32, placement, device)
        scenes = torch.randint(0, len(SCENE_CATEGORIES), part.shape, generator=gen)
        xs.append(to_uint8(composite(render_scenes(scenes, 32, gen, device), rgb, alpha)))
        masks.append(alpha > 0.5)
    return Images(torch.cat(xs), y, torch.cat(masks))


def source_images(cfg: CorruptedObjects.Config, gen: torch.Generator, device: torch.device
                  ) -> tuple[Images, Images, Images]:
    """(train, val, test) clean images."""
    if cfg.source == "sprites":
        pool = sprite_images(cfg.train_size + cfg.val_size + cfg.test_size, gen, device)
        test = pool.part(slice(cfg.train_size + cfg.val_size, None))
    else:
        cifar = load_cifar10(str(cfg.root), cfg.download)
        order = torch.randperm(len(cifar["train_labels"]), generator=gen)
        pool = Images(cifar["train_images"][order].to(device), cifar["train_labels"][order])
        test = Images(cifar["test_images"][:cfg.test_size].to(device), cifar["test_labels"][:cfg.test_size])
    train = pool.part(slice(0, cfg.train_size))
    val = pool.part(slice(cfg.train_size, cfg.train_size + cfg.val_size))
    return train, val, test


def corrupted_split(images: Images, bias: Tensor, level: int, gen: torch.Generator, device: torch.device,
                    debiased: bool) -> Split:
    parts = []
    for start in range(0, len(bias), 4 * CHUNK):
        chunk = slice(start, start + 4 * CHUNK)
        parts.append(to_uint8(corrupt(images.x[chunk].float().div(255), bias[chunk], level, gen)))
    return Split(x=torch.cat(parts), y=images.y.to(device), bias=bias.to(device),
                 group=aligned_group(images.y, bias).to(device), mask=images.mask,
                 x_debiased=images.x if debiased else None)


def build_corrupted_objects(cfg: CorruptedObjects.Config, device: torch.device, seed: int) -> BiasedDataset:
    gen = torch.Generator().manual_seed(seed)
    train, val, test = source_images(cfg, gen, device)
    aligned = 1.0 - cfg.conflict_ratio

    def split(images: Images, fraction: float, debiased: bool = False) -> Split:
        bias = shuffled_block_bias(images.y, NUM_CLASSES, fraction, gen)
        return corrupted_split(images, bias, cfg.level, gen, device, debiased)

    unbiased = split(test, 1.0 / NUM_CLASSES)
    conflicting = (unbiased.bias != unbiased.y).nonzero().flatten()
    splits = {"train": split(train, aligned, True), "val": split(val, aligned, True), "iid": split(test, aligned),
              "unbiased": unbiased, "conflicting": unbiased.map(lambda t: t[conflicting])}
    return BiasedDataset(
        name="corrupted_objects", splits=splits, roles=unbiased_test_roles(),
        num_classes=NUM_CLASSES, class_names=list(CIFAR10_CLASSES),
        bias_kind=f"image corruption ({', '.join(LFF_TYPE0)})", bias_strength=aligned,
        split_descriptions=dict(SPLIT_DESCRIPTIONS), group_names=dict(ALIGNED_GROUPS), teacher_view="x", card=CARD,
    )
