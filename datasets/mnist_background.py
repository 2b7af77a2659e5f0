"""MNIST with a class-correlated background pattern (the background bias of the ISNet papers, Bassi et al.)."""
from __future__ import annotations

import math
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
    shortcut_group,
    shortcut_splits,
    stroke_mask,
)

NUM_CLASSES = 10
PERIOD = 5.0  # stripe period in pixels

CARD = """\
MNIST with background bias (as in the ISNet / Faster ISNet papers). Grey MNIST digits (3 channels)
composited over a background pattern: sinusoidal stripes of period 5 px whose orientation encodes a class
(class k: k x 18 degrees), random phase per image, peak intensity `amplitude` (default 0.6). The digit is
blended on top (alpha = its grey level), so the stripes show only in the background. In train/val/iid the
stripes have the image's class orientation with probability `strength` (default 1.0), else another
class's. Test splits (MNIST test digits): iid (same rule), shift (another class's stripes, all
bias-conflicting) and ood (no pattern: a black background). bias = stripe orientation id (10 = none);
group 0 = bias-aligned, 1 = bias-conflicting, 2 = no shortcut. mask = the digit (strokes, pixel > 127):
the object, whose complement holds the shortcut. x_debiased (train/val): the same digit over uniform noise
of the same peak intensity, the teacher's training view. The ISNet papers' exact pattern and placement
are not published; this pattern is ours. Sources: Bassi et al., "Improving deep neural network
generalization and robustness to background bias via layer-wise relevance propagation optimization"
(ISNet, Nature Communications 2024); "Faster ISNet" (IEEE Access 2024)."""


@register_dataset("mnist_background")
class MNISTBackground:
    """MNIST digits over class-correlated background stripes (see ``card``)."""

    version = "1"
    card = CARD
    test_options = dict(SMALL_DIGITS)

    @dataclass
    class Config(DigitSource):
        strength: float = 1.0
        amplitude: float = 0.6

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 0.0 <= self.strength <= 1.0:
                raise ValueError(f"strength must be in [0, 1], got {self.strength}")
            if not 0.0 < self.amplitude <= 1.0:
                raise ValueError(f"amplitude must be in (0, 1], got {self.amplitude}")

    @staticmethod
    def fingerprint(cfg: MNISTBackground.Config) -> str:
        return cfg.fingerprint()

    @staticmethod
    def build(cfg: MNISTBackground.Config, device: torch.device | str, seed: int) -> BiasedDataset:
        device = torch.device(device)
        splits = shortcut_splits(cfg, cfg.strength, seed, device, Renderer(cfg.amplitude))
        return BiasedDataset(
            name="mnist_background", splits=splits, roles=SHORTCUT_ROLES,
            num_classes=NUM_CLASSES, class_names=cfg.class_names(),
            bias_kind="background pattern", bias_strength=float(cfg.strength),
            split_descriptions=dict(SHORTCUT_SPLITS), group_names=dict(SHORTCUT_GROUPS), teacher_view="x", card=CARD,
            shortcut_region="outside_mask",
        )


def stripes(bias: Tensor, phase: Tensor, device: torch.device) -> Tensor:
    """N×1×28×28 in [0, 1]: stripes at angle bias·18° with the given phase; zero for NO_SHORTCUT."""
    angle = bias.to(device).float() * (math.pi / NUM_CLASSES)
    coords = torch.arange(28, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    along = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy
    wave = 0.5 * (1 + torch.sin(2 * math.pi * along / PERIOD + phase.to(device)[:, None, None]))
    return (wave * (bias.to(device) != NO_SHORTCUT)[:, None, None]).unsqueeze(1)


def blend(digits: Tensor, background: Tensor) -> Tensor:
    """The digit over the background (alpha = the digit's grey level), as N×3×28×28 uint8."""
    alpha = digits.float().div(255).unsqueeze(1)
    image = alpha + (1 - alpha) * background
    return image.mul(255).round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


@dataclass
class Renderer:
    amplitude: float

    def __call__(self, digits: Tensor, y: Tensor, bias: Tensor, gen: torch.Generator, device: torch.device,
                 debiased: bool) -> Split:
        phase = 2 * math.pi * torch.rand(len(y), generator=gen)
        noise = torch.rand(len(y), 1, 28, 28, generator=gen) if debiased else None
        digits = digits.to(device)
        return Split(
            x=blend(digits, self.amplitude * stripes(bias, phase, device)),
            y=y.to(device), bias=bias.to(device), group=shortcut_group(y, bias).to(device),
            mask=stroke_mask(digits),
            x_debiased=None if noise is None else blend(digits, self.amplitude * noise.to(device)),
        )
