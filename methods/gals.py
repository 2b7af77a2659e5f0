"""GALS, "Guiding visual attention with language specification" (Petryk, Dunlap, Nasseri, Gonzalez, Darrell &
Rohrbach, CVPR 2022), with its "suppress outside" loss; one of the mask-guided baselines of Table 1 of Bassi
et al. (2024).

Deviation, stated in the card: GALS takes its attention map from CLIP (ResNet-50 Grad-CAM for a text prompt of
the class), which cannot be loaded offline. Two stand-ins: ``gals`` takes the dataset's relevant region (from the
masks) blurred with a Gaussian, i.e. the "ideal" language attention, softened as CLIP's maps are; ``gals_teacher``
takes the suite's teacher's Grad-CAM of the label class, the analog of DogsWithTies in Bassi et al. (2024), where
GALS' CLIP is also the distillation teacher (no masks: the tie masks would name the shortcut).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.explain import explain
from bench.explain.cam import upsample
from bench.method import Method, TeacherStudentMethod, register_method
from methods._guided import GuidedHparams, MaskGuided, rolled


@dataclass
class GALSHparams(GuidedHparams):
    """GALS' COCO configuration where it applies to a model trained from scratch (the paper fine-tunes an
    ImageNet ResNet-50): loss weight W = 10,000, SGD lr 0.01, momentum 0.9, weight decay 1e-5; 100 epochs,
    batch 128 and clip 1 as the suite's other baselines. ``attention_blur``: the Gaussian's σ as a fraction of
    the image side (0: the hard region)."""

    epochs: int = 100
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-5
    gals_weight: float = 10_000.0
    attention_blur: float = 1 / 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gals_weight < 0 or self.attention_blur < 0:
            raise ValueError("gals_weight and attention_blur must be >= 0")


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (σ in pixels, kernel radius ⌈3σ⌉, zero padding) of B×1×H×W maps."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.conv2d(maps, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(out, kernel.view(1, 1, -1, 1), padding=(radius, 0))


def max_normalised(maps: Tensor) -> Tensor:
    """B×1×H×W maps scaled per sample so that the maximum is 1 (an all-zero map stays zero)."""
    return maps / maps.flatten(1).amax(1).clamp(min=1e-8)[:, None, None, None]


def attention_map(region: Tensor, blur: float) -> Tensor:
    """The attention A in [0, 1]: the relevant region blurred (σ = ``blur`` × image side), max-normalised."""
    return max_normalised(gaussian_blur(region, blur * region.shape[-1]))


def suppress_outside(grad: Tensor, attention: Tensor) -> Tensor:
    """GALS' "suppress outside" term: L1(∂L/∂x, ∂L/∂x ⊙ A), the mean over every input element of
    |∂L/∂x ⊙ (1 − A)| (A broadcast over channels)."""
    return F.l1_loss(grad, grad * attention)


@register_method("gals")
class GALS(MaskGuided):
    """GALS (Petryk et al. 2022, Sec. 3): L = CE + W · L1(∂CE/∂x, ∂CE/∂x ⊙ A), trained through the double
    backward of the input gradient of the (batch-mean) cross-entropy; A from the masks (see the module
    docstring for the deviation from CLIP attention)."""

    Hparams = GALSHparams
    protocols = {"fast": {"epochs": 2}}
    requires = frozenset({"labels", "masks"})

    def attention(self, batch: Batch) -> Tensor:
        return attention_map(self.region(batch), self.hp.attention_blur)

    def losses(self, batch: Batch, create_graph: bool) -> dict[str, Tensor]:
        x = batch.x.detach().requires_grad_(True)
        ce = F.cross_entropy(self.model(x), batch.y)
        (grad,) = torch.autograd.grad(ce, x, create_graph=create_graph)
        penalty = suppress_outside(grad, self.attention(batch))
        return {"ce": ce, "penalty": penalty, "loss": ce + self.hp.gals_weight * penalty}


@register_method("gals_teacher")
class GALSTeacher(GALS, TeacherStudentMethod):
    """GALS with its attention from the frozen teacher instead of CLIP: the teacher's Grad-CAM of the label class
    (at its last feature map, on the teacher's view of the image), upsampled to the input and max-normalised, as
    GALS turns CLIP's Grad-CAM into attention; ``attention_blur`` is not used. The random control rolls each
    sample's attention map as the mask methods roll their regions."""

    requires = frozenset({"labels", "teacher"})

    def build(self) -> None:
        Method.build(self)  # no masks to check

    def attention(self, batch: Batch) -> Tensor:
        with torch.enable_grad():
            cam = explain(self.teacher, self.teacher_input(batch), batch.y, "gradcam")
        attention = max_normalised(upsample(cam.detach(), batch.x))
        if self.hp.mask_control == "random":
            assert batch.index is not None
            attention = rolled(attention, batch.index)
        return attention
