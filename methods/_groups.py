"""Shared pieces of the group-robust methods (GroupDRO, IRM, PGI): per-group batch statistics computed on the
device without host syncs, the penultimate features of a zoo model, and Ahmed et al.'s partition predictor,
which infers a binary majority/minority partition of each class when no group labels are granted.

Ahmed, Bengio, van Seijen & Courville, "Systematic generalisation with group invariant predictions", ICLR 2021
(the source of the IRM, GroupDRO and PGI rows that Table 1 of Bassi et al. 2024 copies): after one epoch of
ERM, a small network per class on the classifier's features outputs a soft membership α = (1 + tanh(s/T))/2 and
is trained for a few steps to *maximise* the two soft environments' summed risks plus 10 × their IRMv1 penalties
(an EIIL-style adversarial split); samples are then assigned round(α), and the side with the higher mean loss
in each class is the minority (β = 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from bench.data import Batch
from bench.method import Method, TrainHparams
from bench.models import classifier_module

GROUPINGS = ("true", "inferred")


@dataclass
class GroupHparams(TrainHparams):
    """Options of the group-inference stage (Ahmed et al.'s ``mnist/main.py`` constants), used by the
    ``*_inferred`` variants: partition after ``partition_epochs`` epochs of ERM, ``partition_steps`` Adam steps
    (lr ``partition_lr``) per class on batches of ``partition_batch`` samples of the class, temperature
    ``partition_temperature``; the penalty weight then ramps up linearly over ``ramp_epochs`` epochs."""

    partition_epochs: int = 1
    partition_steps: int = 100
    partition_lr: float = 1e-4
    partition_batch: int = 512
    partition_temperature: float = 10.0
    ramp_epochs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.partition_epochs < self.epochs:
            raise ValueError(f"partition_epochs must be in [0, epochs), got {self.partition_epochs}")
        if self.partition_steps < 1 or self.partition_batch < 2 or self.partition_lr <= 0:
            raise ValueError("partition_steps must be >= 1, partition_batch >= 2 and partition_lr > 0")
        if self.partition_temperature <= 0 or self.ramp_epochs < 0:
            raise ValueError("partition_temperature must be > 0 and ramp_epochs >= 0")


# --- per-group statistics (no host sync: fixed-size scatter over the known number of groups) ----------------
def group_means(values: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Mean of ``values`` per group (0 where a group is absent from the batch) and the presence mask."""
    counts = torch.zeros(n_groups, device=values.device, dtype=values.dtype).scatter_add_(
        0, groups, torch.ones_like(values))
    sums = torch.zeros(n_groups, device=values.device, dtype=values.dtype).scatter_add_(0, groups, values)
    present = counts > 0
    return sums / counts.clamp(min=1), present


def balanced_risk(losses: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """Mean over the groups present in the batch of each group's mean loss (Ahmed et al.'s group-balanced CE)."""
    means, present = group_means(losses, groups, n_groups)
    return (means * present).sum() / present.sum().clamp(min=1)


def penultimate(model: nn.Module, x: Tensor, forward: Any = None) -> tuple[Tensor, Tensor]:
    """(features, logits): the input of the model's final linear layer and the output of ``forward(x)`` (default:
    the model itself; e.g. a masked functional call of it)."""
    seen: list[Tensor] = []
    handle = classifier_module(model).register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        logits = (forward or model)(x)
    finally:
        handle.remove()
    return seen[0].flatten(1), logits


# --- Ahmed et al.'s partition predictor -----------------------------------------------------------------
class PartitionPredictor(nn.Module):
    """Three spectrally normalised linear layers (widths D, D/2, D/3) with layer norm and ReLU, and a linear
    output without bias: one soft-membership logit per sample."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for i in range(3):
            out = max(1, dim // (i + 1))
            layers += [spectral_norm(nn.Linear(width, out)), nn.LayerNorm(out), nn.ReLU()]
            width = out
        layers.append(spectral_norm(nn.Linear(width, 1, bias=False)))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features).squeeze(1)


def soft_split_objective(alpha: Tensor, losses: Tensor, scale_grads: Tensor) -> Tensor:
    """R₁ + R₂ + 10 (G₁ + G₂) of the soft environments α and 1 − α: Rₑ the weighted mean loss and Gₑ the squared
    norm of the weighted mean gradient of the loss with respect to a dummy per-class logit scale (IRMv1), from
    the per-sample gradients ``scale_grads`` (N × K)."""
    total = losses.new_zeros(())
    for weight in (alpha, 1.0 - alpha):
        norm = weight.sum().clamp(min=1e-12)
        risk = (weight * losses).sum() / norm
        grad = (weight[:, None] * scale_grads).sum(0) / norm
        total = total + risk + 10.0 * grad.pow(2).sum()
    return total


def scale_gradients(logits: Tensor, y: Tensor) -> Tensor:
    """Per sample ∂ CE(z ⊙ w, y) / ∂w at w = 1 (w: one scale per class): z ⊙ (softmax(z) − onehot(y))."""
    return logits * (F.softmax(logits, dim=1) - F.one_hot(y, logits.shape[1]).to(logits.dtype))


def membership(predictor: PartitionPredictor, features: Tensor, temperature: float) -> Tensor:
    """The soft membership α = (1 + tanh(s / T)) / 2 of each sample in the first environment."""
    return 0.5 * (1 + torch.tanh(predictor(features) / temperature))


def train_partition_predictor(features: Tensor, losses: Tensor, grads: Tensor, hp: GroupHparams) -> PartitionPredictor:
    """One class's partition predictor, trained by Adam to maximise ``soft_split_objective`` on random batches."""
    predictor = PartitionPredictor(features.shape[1]).to(features.device)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=hp.partition_lr)
    size = min(hp.partition_batch, len(features))
    for _ in range(hp.partition_steps):
        pick = torch.randperm(len(features), device=features.device)[:size]
        alpha = membership(predictor, features[pick], hp.partition_temperature)
        loss = -0.5 * soft_split_objective(alpha, losses[pick], grads[pick])  # the predictor maximises
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return predictor


def infer_partition(features: Tensor, logits: Tensor, y: Tensor, num_classes: int, hp: GroupHparams) -> Tensor:
    """β ∈ {0, 1} per sample, round(α) of its class's predictor, flipped per class so that β = 1 is the side with
    the higher mean loss (the minority); from features and logits of the whole training split, computed once
    with the network fixed. (As in Ahmed et al., a class may end up on one side only.)"""
    losses = F.cross_entropy(logits, y, reduction="none")
    grads = scale_gradients(logits, y)
    beta = torch.zeros_like(y)
    for c in range(num_classes):
        members = (y == c).nonzero().squeeze(1)
        if len(members) < 2:
            continue
        predictor = train_partition_predictor(features[members], losses[members], grads[members], hp)
        with torch.no_grad():
            side = (predictor(features[members]) > 0).long()  # round(α) = 1 where the logit is positive
        if 0 < int(side.sum()) < len(side) and losses[members][side == 1].mean() < losses[members][side == 0].mean():
            side = 1 - side
        beta[members] = side
    return beta


class GroupMethod(Method):
    """A group-robust method: ``step_losses`` gets per-sample groups in ``[0, n_groups)``: the dataset's group
    labels (``grouping = "true"``; budget: labels and group labels) or Ahmed et al.'s inferred β partition
    (``grouping = "inferred"``; budget: labels only, ERM until the partition, penalties ramped up after it)."""

    grouping: ClassVar[str] = "true"
    extra_state: ClassVar[tuple[str, ...]] = ()  # tensors of the method's own kept in its state dict

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        return self.descend(self.losses(batch))

    def build(self) -> None:
        super().build()
        assert self.ctx.train is not None
        device = self.device
        if self.grouping == "true":
            groups = torch.cat([b.group for b in self.ctx.train.batches(4096)])
            self.n_groups = int(groups.max()) + 1
        else:
            groups = torch.zeros(len(self.ctx.train), dtype=torch.long, device=device)
            self.n_groups = 2
        self.partition = groups.to(device)  # the training split's group of each sample
        self.penalty_scale = torch.tensor(0.0 if self.grouping == "inferred" else 1.0, device=device)

    @property
    def start_epoch(self) -> int:
        return self.hp.partition_epochs if self.grouping == "inferred" else 0

    def on_epoch_start(self, epoch: int) -> None:
        if self.grouping == "inferred" and epoch == self.hp.partition_epochs:
            self.partition = self._infer()
        if epoch >= self.start_epoch:
            ramp = self.hp.ramp_epochs if self.grouping == "inferred" else 0
            # Ahmed et al. ramp per step over ``ramp_epochs``; per epoch, each epoch gets its mean value
            self.penalty_scale.fill_(min(1.0, (epoch - self.start_epoch + 0.5) / ramp) if ramp else 1.0)
        else:
            self.penalty_scale.fill_(0.0)

    def selectable(self) -> bool:
        """An inferred variant's epochs before its partition exists are plain ERM, not the method: not chosen."""
        return self.grouping == "true" or bool(self.penalty_scale > 0)

    def _infer(self) -> Tensor:
        assert self.ctx.train is not None
        feats, logits, ys = [], [], []
        self.model.eval()
        with torch.no_grad():
            for batch in self.ctx.train.batches(1024):
                f, z = penultimate(self.model, batch.x)
                feats.append(f)
                logits.append(z)
                ys.append(batch.y)
        self.model.train()
        return infer_partition(torch.cat(feats), torch.cat(logits), torch.cat(ys), self.ctx.num_classes, self.hp)

    def groups_of(self, batch: Batch) -> Tensor:
        if self.grouping == "true":
            return batch.group
        assert batch.index is not None
        return self.partition[batch.index]

    def mined_minority(self) -> Tensor | None:
        inferred = self.grouping == "inferred" and bool(self.penalty_scale > 0)  # > 0 from the partition epoch on
        return self.partition.bool() if inferred else None

    def epoch_metrics(self) -> dict[str, float]:
        if self.grouping != "inferred":
            return {}
        return {"inferred_minority_share": float(self.partition.float().mean())}

    def state_dict(self) -> dict[str, Any]:
        names = ("partition", "penalty_scale", *self.extra_state)
        return {**super().state_dict(), **{name: getattr(self, name) for name in names}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name in ("partition", "penalty_scale", *self.extra_state):
            setattr(self, name, state[name].to(self.device))
