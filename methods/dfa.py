"""Learning debiased representation via disentangled feature augmentation (DFA, also "DisEnt"; Lee, Kim, Lee,
Lee & Choo, NeurIPS 2021): a row of Table 1 of the neuron-differentiation paper (seed 003)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data import Batch
from bench.losses import gce
from bench.method import Method, TrainHparams, register_method
from bench.models import classifier_module
from methods._mining import LossEMA, relative_difficulty, upweighted
from methods.lff import label_table


@dataclass
class DFAHparams(TrainHparams):
    """The authors' Colored MNIST script: Adam lr 0.01, no weight decay, batch 256, 50,000 steps (213 epochs of
    60,000 images), feature swapping from step 10,000 (``swap_epochs`` = 43), the learning rate halved every
    10,000 steps after that (epochs 85, 128, 171), λ_dis = λ_swap_b = 10, λ_swap = 1, GCE q = 0.7, loss averages
    α = 0.7; no gradient clipping."""

    epochs: int = 213
    batch_size: int = 256
    lr: float = 1e-2
    grad_clip: float = 0.0
    lr_milestones: tuple[int, ...] = (85, 128, 171)
    lr_gamma: float = 0.5
    swap_epochs: int = 43
    lambda_dis: float = 10.0
    lambda_swap_b: float = 10.0
    lambda_swap: float = 1.0
    gce_q: float = 0.7
    ema_alpha: float = 0.7

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.swap_epochs < 0 or min(self.lambda_dis, self.lambda_swap_b, self.lambda_swap) < 0:
            raise ValueError("swap_epochs and the lambdas must be >= 0")
        if not 0 < self.gce_q <= 1 or not 0 <= self.ema_alpha < 1:
            raise ValueError("need 0 < gce_q <= 1 and 0 <= ema_alpha < 1")


class TwoEncoders(nn.Module):
    """An intrinsic and a bias encoder (two zoo networks without their final linear layer) and one linear head
    each over the concatenated features [z_i, z_b]; the module's output is the intrinsic head's."""

    def __init__(self, intrinsic: nn.Module, bias: nn.Module, num_classes: int) -> None:
        super().__init__()
        width = classifier_module(intrinsic).in_features
        for encoder in (intrinsic, bias):
            setattr(encoder, encoder.classifier_layer, nn.Identity())
        self.intrinsic, self.bias = intrinsic, bias
        self.head_i, self.head_b = nn.Linear(2 * width, num_classes), nn.Linear(2 * width, num_classes)
        self.feature_layer = f"intrinsic.{intrinsic.feature_layer}"
        self.classifier_layer = "head_i"

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.intrinsic(x).flatten(1), self.bias(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head_i(torch.cat(self.encode(x), 1))


def dfa_losses(model: TwoEncoders, z_i: Tensor, z_b: Tensor, y: Tensor, weight: Tensor, perm: Tensor | None,
               hp: DFAHparams) -> dict[str, Tensor]:
    """L_dis = mean W·CE(h_i([z_i, sg z_b]), y) + λ_dis mean GCE(h_b([sg z_i, z_b]), y) and, with a permutation
    ``perm`` of the batch (after the swap epoch), L_swap, the same on [z_i, sg z̃_b] with labels y and on
    [sg z_i, z̃_b] with the swapped labels ỹ (z̃_b = z_b[perm]); total = L_dis + λ_swap L_swap (Lee et al. Eqs. 3–6)."""
    conf = F.cross_entropy(model.head_i(torch.cat([z_i, z_b.detach()], 1)), y, reduction="none")
    align = gce(model.head_b(torch.cat([z_i.detach(), z_b], 1)), y, hp.gce_q)
    logs = {"loss_dis": (weight * conf).mean() + hp.lambda_dis * align.mean()}
    if perm is None:
        logs["loss"] = logs["loss_dis"]
        return logs
    z_swap = z_b[perm]
    conf_swap = F.cross_entropy(model.head_i(torch.cat([z_i, z_swap.detach()], 1)), y, reduction="none")
    align_swap = gce(model.head_b(torch.cat([z_i.detach(), z_swap], 1)), y[perm], hp.gce_q)
    logs["loss_swap"] = (weight * conf_swap).mean() + hp.lambda_swap_b * align_swap.mean()
    logs["loss"] = logs["loss_dis"] + hp.lambda_swap * logs["loss_swap"]
    return logs


@register_method("dfa")
class DFA(Method):
    """DFA (Lee et al. 2021): intrinsic and bias encoders E_i, E_b, each with a linear classifier over [z_i, z_b];
    the bias side learns with generalised cross-entropy, the intrinsic side with cross-entropy weighted by LfF's
    relative difficulty (from the two heads' per-sample loss averages); after ``swap_epochs`` the bias features are
    permuted within the batch to synthesise bias-conflicting samples (feature augmentation). Adam on both."""

    Hparams = DFAHparams
    protocols = {"fast": {"epochs": 2, "batch_size": 128, "swap_epochs": 1, "lr_milestones": ()}}
    requires = frozenset({"labels"})

    def build(self) -> None:
        self.model = TwoEncoders(self.new_model(), self.new_model(), self.ctx.num_classes).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.hp.lr, weight_decay=self.hp.weight_decay)
        self.params = self.trainable()
        labels = label_table(self)
        self.ema_i = LossEMA(labels, self.ctx.num_classes, self.hp.ema_alpha)
        self.ema_b = LossEMA(labels, self.ctx.num_classes, self.hp.ema_alpha)
        self.swapping = torch.tensor(False)

    def on_epoch_start(self, epoch: int) -> None:
        self.swapping = torch.tensor(epoch >= self.hp.swap_epochs)

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None and batch.index is not None
        self.optimizer.zero_grad(set_to_none=True)
        model: TwoEncoders = self.model  # type: ignore[assignment]
        z_i, z_b = model.encode(batch.x)
        with torch.no_grad():  # the two heads' losses on the unswapped features, for the weights
            z = torch.cat([z_i, z_b], 1)
            self.ema_i.update(batch.index, F.cross_entropy(model.head_i(z), batch.y, reduction="none"))
            self.ema_b.update(batch.index, F.cross_entropy(model.head_b(z), batch.y, reduction="none"))
            weight = relative_difficulty(self.ema_b.normalised(batch.index), self.ema_i.normalised(batch.index))
        perm = torch.randperm(len(batch.y), device=batch.y.device) if bool(self.swapping) else None
        logs = dfa_losses(model, z_i, z_b, batch.y, weight, perm, self.hp)
        return {**self.descend(logs), "weight": weight.mean()}

    def mined_minority(self) -> Tensor | None:
        return upweighted(self.ema_b, self.ema_i)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ema_i": self.ema_i.state_dict(), "ema_b": self.ema_b.state_dict(),
                "swapping": self.swapping}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema_i.load_state_dict(state["ema_i"])
        self.ema_b.load_state_dict(state["ema_b"])
        self.swapping = state["swapping"]
