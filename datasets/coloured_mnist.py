"""COLOURED MNIST: digit strokes painted in a class-correlated colour (Ahmed et al.'s generator, as used by
the explanation-distillation paper, Bassi et al. 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import BiasedDataset, Split, SplitRoles, register_dataset
from bench.errors import UserError
from datasets.mnist_source import SOURCES, load_mnist, source_fingerprint

NUM_CLASSES = 10
NUM_EXTRA_COLOURS = 10  # unbiasing colours and OOD test colours, 10 of each
MIN_SQ_DIST = 2500  # Ahmed's _D: minimum squared RGB distance of a new colour to the ones it must avoid
STROKE_THRESHOLD = 127  # pixel > 127 (intensity > 0.5) is stroke
TRAIN_POOL, TEST_POOL = 60000, 10000

# Class colour of digit k. Digits 1..9 use Ahmed's palette; Ahmed drops digit 0, so it gets purple,
# whose nearest palette neighbour is deep pink at squared distance 16890 (well above MIN_SQ_DIST).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 0, 128),    # 0 purple (ours)
    (0, 100, 0),      # 1 dark green
    (188, 143, 143),  # 2 rosy brown
    (255, 0, 0),      # 3 red
    (255, 215, 0),    # 4 gold
    (0, 255, 0),      # 5 lime
    (65, 105, 225),   # 6 royal blue
    (0, 225, 225),    # 7 cyan-ish
    (0, 0, 255),      # 8 blue
    (255, 20, 147),   # 9 deep pink
)

CARD = """\
COLOURED MNIST (foreground-colour shortcut). Each digit is binarised (pixel > 127 is stroke) and its
strokes are painted one flat RGB colour on an exactly black background (3×28×28 uint8). In train/val/iid
an image takes its class colour with probability `strength` (1.0 = every image, the explanation-distillation
paper's "100% biased" setting), otherwise one of 10 random "unbiasing" colours, so colour alone predicts
the label. Palette: Ahmed et al.'s colours for digits 1..9; digit 0 (dropped by Ahmed) is purple
(128,0,128). Splits: MNIST's 60,000 training images shuffled per seed, first 48,000 -> train, next 12,000
-> val (biased, used for model selection); MNIST's 10,000 test images -> iid (same rule as train), ood
(one of 10 unseen colours, > 50 RGB units from every training colour) and shift (the class colour of
another digit, uniform over the other 9). iid/ood/shift hold the same digits. bias = colour id (0..9 class
colours, 10..19 unbiasing, 20..29 OOD); group 0 = bias-aligned, 1 = bias-conflicting. x_debiased (train/val
only): the same strokes in a uniformly random colour per image, the teacher's training data.
Sources: Bassi, Cavalli, Decherchi, "Explanation is All You Need in Distillation" (arXiv 2407.09788);
Ahmed et al., "Systematic generalisation with group invariant predictions" (ICLR 2021)."""

SPLIT_DESCRIPTIONS = {
    "train": "biased training set: class colour with probability strength, else an unbiasing colour",
    "val": "biased IID validation set (same rule as train), used for model selection",
    "iid": "MNIST test digits, same colouring rule as train",
    "ood": "MNIST test digits in one of 10 colours unseen in training",
    "shift": "MNIST test digits in the class colour of a different digit (systematic shift)",
}


@register_dataset("coloured_mnist")
class ColouredMNIST:
    """The COLOURED MNIST family (see ``card``)."""

    version = "1"
    card = CARD
    test_options = {"train_size": 512, "val_size": 256, "test_size": 256}  # small, for contract tests

    @dataclass
    class Config:
        strength: float = 1.0
        source: str = "embedded"
        root: str | None = None
        download: bool = False
        train_size: int = 48000
        val_size: int = 12000
        test_size: int = 10000

        def __post_init__(self) -> None:
            if not 0.0 <= self.strength <= 1.0:
                raise ValueError(f"strength must be in [0, 1], got {self.strength}")
            if self.source not in SOURCES:
                raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
            if self.source == "torchvision" and not self.root:
                raise ValueError("source=torchvision needs root=<folder holding MNIST/raw>")
            if self.download and self.source != "torchvision":
                raise ValueError("download=true only applies to source=torchvision")
            for name in ("train_size", "val_size", "test_size"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
            if self.train_size + self.val_size > TRAIN_POOL:
                raise ValueError(f"train_size + val_size must be at most {TRAIN_POOL}, "
                                 f"got {self.train_size + self.val_size}")
            if self.test_size > TEST_POOL:
                raise ValueError(f"test_size must be at most {TEST_POOL}, got {self.test_size}")

    @staticmethod
    def fingerprint(cfg: ColouredMNIST.Config) -> str:
        return source_fingerprint(cfg.source, cfg.root)

    @staticmethod
    def build(cfg: ColouredMNIST.Config, device: torch.device | str, seed: int) -> BiasedDataset:
        return build_coloured_mnist(cfg, torch.device(device), seed)


def palette() -> Tensor:
    """The 10 class colours (10×3 int64), row k = digit k."""
    return torch.tensor(PALETTE, dtype=torch.int64)


def min_sq_distance(colours: Tensor, others: Tensor) -> Tensor:
    """For each row of ``colours`` (N×3), its smallest squared RGB distance to any row of ``others``."""
    diff = colours.long()[:, None, :] - others.long()[None, :, :]
    return diff.pow(2).sum(-1).min(dim=1).values


def draw_distant_colours(n: int, avoid: Tensor, gen: torch.Generator) -> Tensor:
    """``n`` random RGB colours in 0..254, each at squared distance > MIN_SQ_DIST from all of ``avoid``."""
    found: list[Tensor] = []
    while len(found) < n:
        candidate = torch.randint(0, 255, (1, 3), generator=gen)
        if int(min_sq_distance(candidate, avoid)) > MIN_SQ_DIST:
            found.append(candidate)
    return torch.cat(found)


def biased_colour_ids(y: Tensor, strength: float, gen: torch.Generator) -> Tensor:
    """Class colour id with probability ``strength``, else a uniform unbiasing colour id (10..19)."""
    aligned = torch.rand(y.shape[0], generator=gen) < strength
    unbiasing = NUM_CLASSES + torch.randint(0, NUM_EXTRA_COLOURS, y.shape, generator=gen)
    return torch.where(aligned, y, unbiasing)


def paint(digits: Tensor, colours: Tensor, device: torch.device) -> Tensor:
    """Binarised strokes of ``digits`` (N×28×28 uint8) times per-image ``colours`` (N×3) → N×3×28×28 uint8."""
    strokes = (digits.to(device) > STROKE_THRESHOLD).to(torch.uint8).unsqueeze(1)
    return strokes * colours.to(device=device, dtype=torch.uint8)[:, :, None, None]


def make_split(digits: Tensor, y: Tensor, bias: Tensor, table: Tensor, device: torch.device,
               teacher_colours: Tensor | None = None) -> Split:
    """One split from its digits, labels and colour ids (rows of ``table``)."""
    return Split(
        x=paint(digits, table[bias], device),
        y=y.to(device),
        bias=bias.to(device),
        group=(bias != y).long().to(device),
        x_debiased=None if teacher_colours is None else paint(digits, teacher_colours, device),
    )


def build_coloured_mnist(cfg: ColouredMNIST.Config, device: torch.device, seed: int) -> BiasedDataset:
    """Draw every random choice on a CPU generator (so any device gives the same data), paint on ``device``.

    Choices are drawn for the whole train pool and test set, so smaller sizes are prefixes of the defaults.
    """
    mnist = load_mnist(cfg.source, cfg.root, cfg.download)
    pool, test_n = mnist["train_images"].shape[0], mnist["test_images"].shape[0]
    if cfg.train_size + cfg.val_size > pool or cfg.test_size > test_n:
        raise UserError(f"MNIST ({cfg.source}) has {pool} train / {test_n} test images, too few for "
                        f"train_size+val_size={cfg.train_size + cfg.val_size}, test_size={cfg.test_size}")

    gen = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.randperm(pool, generator=gen)
    unbiasing = draw_distant_colours(NUM_EXTRA_COLOURS, palette(), gen)
    unseen = draw_distant_colours(NUM_EXTRA_COLOURS, torch.cat([palette(), unbiasing]), gen)
    table = torch.cat([palette(), unbiasing, unseen])  # colour id → RGB

    pool_digits, pool_y = mnist["train_images"][order], mnist["train_labels"][order]
    pool_bias = biased_colour_ids(pool_y, cfg.strength, gen)
    pool_teacher = torch.rand(pool, 3, generator=gen).mul(255).round()

    test_y = mnist["test_labels"]
    iid_bias = biased_colour_ids(test_y, cfg.strength, gen)
    ood_bias = 2 * NUM_CLASSES + torch.randint(0, NUM_EXTRA_COLOURS, test_y.shape, generator=gen)
    shift_bias = (test_y + torch.randint(1, NUM_CLASSES, test_y.shape, generator=gen)) % NUM_CLASSES

    train = slice(0, cfg.train_size)
    val = slice(cfg.train_size, cfg.train_size + cfg.val_size)
    test = slice(0, cfg.test_size)
    test_digits, test_y = mnist["test_images"][test], test_y[test]
    splits = {
        "train": make_split(pool_digits[train], pool_y[train], pool_bias[train], table, device, pool_teacher[train]),
        "val": make_split(pool_digits[val], pool_y[val], pool_bias[val], table, device, pool_teacher[val]),
        "iid": make_split(test_digits, test_y, iid_bias[test], table, device),
        "ood": make_split(test_digits, test_y, ood_bias[test], table, device),
        "shift": make_split(test_digits, test_y, shift_bias[test], table, device),
    }
    return BiasedDataset(
        name="coloured_mnist",
        splits=splits,
        roles=SplitRoles(selection="val", validation=("val",), iid="iid", shifted=("ood", "shift"),
                         oracle="ood_acc", headline="ood_acc", group_kinds={0: "aligned", 1: "conflicting"}),
        num_classes=NUM_CLASSES,
        class_names=[str(k) for k in range(NUM_CLASSES)],
        bias_kind="foreground colour",
        bias_strength=float(cfg.strength),
        split_descriptions=dict(SPLIT_DESCRIPTIONS),
        group_names={0: "bias-aligned", 1: "bias-conflicting"},
        teacher_view="x",
        card=CARD,
    )
