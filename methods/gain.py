"""Guided Attention Inference Network (Li, Wu, Peng, Ernst & Fu, "Tell Me Where to Look: Guided Attention
Inference Network", CVPR 2018), with external supervision from segmentation masks (GAIN_ext, Sec. 3.3); one of
the mask-guided baselines of Table 1 of Bassi et al. (2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.explain import explain_with_logits
from bench.explain.cam import upsample
from bench.method import register_method
from bench.models import running_stats_frozen
from methods._guided import GuidedHparams, MaskGuided


@dataclass
class GAINHparams(GuidedHparams):
    """GAIN's constants as the ISNet authors run it (spec §4, after AustinDoolittle/Pytorch-Gain): soft-mask
    scale ω = 10 and threshold σ = 0.5, attention-mining weight α = 1, external-supervision weight w = 10; the
    optimiser as the other mask-guided baselines of the distillation paper (SGD lr 1e-2, momentum 0.99, clip 1,
    batch 128, 100 epochs)."""

    epochs: int = 100
    lr: float = 1e-2
    momentum: float = 0.99
    omega: float = 10.0
    sigma: float = 0.5
    mining_weight: float = 1.0
    external_weight: float = 10.0
    # The erased images' forward updates batch-norm running statistics as in the ISNet authors' GAIN code
    # (True); by default it does not: the running statistics then estimate the clean images the network is
    # evaluated on (see ``GAIN``).
    mining_updates_running_stats: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.omega <= 0 or self.mining_weight < 0 or self.external_weight < 0:
            raise ValueError("need omega > 0, mining_weight >= 0 and external_weight >= 0")


def normalised_cam(cam: Tensor, like: Tensor) -> Tensor:
    """A Grad-CAM map (B×1×h×w, ≥ 0) resized bilinearly to the input and scaled to [0, 1] per sample (divided
    by its maximum), so that the threshold σ has one meaning for every image."""
    resized = upsample(cam, like)
    return resized / resized.flatten(1).amax(1).clamp(min=1e-8)[:, None, None, None]


def soft_mask(attention: Tensor, omega: float, sigma: float) -> Tensor:
    """T(A) = sigmoid(ω (A − σ)) (GAIN Eq. 3)."""
    return torch.sigmoid(omega * (attention - sigma))


def attention_mining_loss(logits_masked: Tensor, y: Tensor) -> Tensor:
    """L_am (GAIN Eq. 5): the mean score of the true class on the image with its attended region erased."""
    return F.softmax(logits_masked, dim=1).gather(1, y[:, None]).mean()


def external_loss(attention: Tensor, region: Tensor) -> Tensor:
    """L_e (GAIN Eq. 7): mean squared difference between the attention map and the relevant region."""
    return F.mse_loss(attention, region)


@register_method("gain")
class GAIN(MaskGuided):
    """GAIN_ext (Li et al. 2018, Eq. 3-7): L = CE(f(x), y) + α L_am + w L_e. A = Grad-CAM of the label class at
    the last feature layer (differentiable: double backward), resized and scaled to [0, 1]; I* = x − T(A) ⊙ x
    (Eq. 4) erases what the network attends to, and L_am pushes the label's score on I* down; L_e pulls A
    towards the relevant region of the masks (the object, or everything but the shortcut).

    GAIN's paper uses VGG, without batch norm. On a network with batch norm, the forward on I* in train mode
    also moves the running statistics towards those of erased images, so the network evaluated at inference
    is not the one trained (measured on mnist_background: see the diagnosis table of
    results/reproductions/masks-mnist-background.md). By default the I* forward leaves the running statistics
    alone; ``mining_updates_running_stats`` restores the authors' behaviour."""

    Hparams = GAINHparams
    protocols = {"fast": {"epochs": 2}}
    requires = frozenset({"labels", "masks"})

    def losses(self, batch: Batch, create_graph: bool) -> dict[str, Tensor]:
        cam, logits, _ = explain_with_logits(self.model, batch.x, batch.y, "gradcam", create_graph=create_graph)
        attention = normalised_cam(cam, batch.x)
        erased = batch.x - soft_mask(attention, self.hp.omega, self.hp.sigma) * batch.x
        ce = F.cross_entropy(logits, batch.y)
        if self.hp.mining_updates_running_stats:
            logits_erased = self.model(erased)
        else:
            with running_stats_frozen(self.model):
                logits_erased = self.model(erased)
        mining = attention_mining_loss(logits_erased, batch.y)
        external = external_loss(attention, self.region(batch))
        loss = ce + self.hp.mining_weight * mining + self.hp.external_weight * external
        return {"ce": ce, "mining": mining, "external": external, "loss": loss}
