"""Predictive group invariance (Ahmed, Bengio, van Seijen & Courville, "Systematic generalisation with group
invariant predictions", ICLR 2021), with the dataset's groups (``pgi``) or its own inferred partition
(``pgi_inferred``, the PGI* row of Table 1 of Bassi et al. 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from bench.data import Batch
from bench.method import register_method
from bench.models import classifier_module
from methods._groups import GroupHparams, GroupMethod, balanced_risk, penultimate

EPS = 1e-12


@dataclass
class PGIHparams(GroupHparams):
    """Ahmed et al.'s COLOURED MNIST run (``mnist/main.py``): SGD momentum 0.9, lr 0.1, batch 512, 30 epochs with
    the lr divided by 10 after epochs 9, 18 and 24, L2 weight 1e-4; ``penalty_weight`` (their ``-wc``) is
    tuned per dataset."""

    epochs: int = 30
    batch_size: int = 512
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] = (9, 18, 24)
    penalty_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.penalty_weight < 0:
            raise ValueError("penalty_weight must be >= 0")


def pgi_penalty(probs: Tensor, y: Tensor, groups: Tensor, majority: Tensor, num_classes: int,
                n_groups: int) -> Tensor:
    """Σ over classes c and over the class's other groups g present in the batch of KL(p̄_{c,g} ‖ p̄_{c,maj})/K,
    p̄ the mean predicted distribution of the group's samples of class c and maj the class's majority group
    (Ahmed et al.'s ``pgi_closs``: the minority's mean prediction against the majority's, averaged over the
    K outputs)."""
    cell = y * n_groups + groups  # (class, group) cells
    k = probs.shape[1]
    sums = torch.zeros(num_classes * n_groups, k, device=probs.device, dtype=probs.dtype).index_add_(0, cell, probs)
    counts = torch.zeros(num_classes * n_groups, device=probs.device, dtype=probs.dtype).index_add_(
        0, cell, torch.ones_like(y, dtype=probs.dtype))
    means = (sums / counts.clamp(min=1)[:, None]).clamp(EPS, 1 - EPS).view(num_classes, n_groups, k)
    present = (counts > 0).view(num_classes, n_groups)
    reference = means[torch.arange(num_classes, device=probs.device), majority]  # C × K
    ref_present = present[torch.arange(num_classes, device=probs.device), majority]
    kl = (means * (means / reference[:, None]).log()).mean(2)  # C × G
    others = present & ref_present[:, None] & (torch.arange(n_groups, device=probs.device) != majority[:, None])
    return (kl * others).sum()


@register_method("pgi")
class PGI(GroupMethod):
    """PGI (Ahmed et al. 2021, Eq. 4): min ½ Σ_β R_β + λ Σ_c KL(p̃(·|c, minority) ‖ p̃(·|c, majority)), R_β the mean
    cross-entropy of each side and p̃ a side's mean predicted distribution over its samples of class c in the
    batch; the penalty trains the feature extractor only (the classifier gets the cross-entropy). With the
    dataset's groups, a class's majority is its most frequent group in the training split and every other group
    is held to it."""

    Hparams = PGIHparams
    protocols = {"fast": {"epochs": 2, "batch_size": 128, "lr_milestones": ()}}
    requires = frozenset({"labels", "group_labels"})
    extra_state = ("majority",)

    def build(self) -> None:
        super().build()
        self.majority = self._majority()

    def _majority(self) -> Tensor:
        assert self.ctx.train is not None
        ys = torch.cat([b.y for b in self.ctx.train.batches(4096)]).to(self.device)
        cells = torch.bincount(ys * self.n_groups + self.partition, minlength=self.ctx.num_classes * self.n_groups)
        return cells.view(self.ctx.num_classes, self.n_groups).argmax(1)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.grouping == "inferred" and epoch == self.hp.partition_epochs:
            self.majority.zero_()  # β = 0 is each class's majority side

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        features, logits = penultimate(self.model, batch.x)
        groups = self.groups_of(batch)
        risk = balanced_risk(F.cross_entropy(logits, batch.y, reduction="none"), groups, self.n_groups)
        head = classifier_module(self.model)
        frozen = {name: p.detach() for name, p in head.named_parameters()}
        probs = F.softmax(functional_call(head, frozen, (features,)), dim=1)  # the penalty's path skips the head
        penalty = pgi_penalty(probs, batch.y, groups, self.majority, self.ctx.num_classes, self.n_groups)
        loss = risk + self.hp.penalty_weight * self.penalty_scale * penalty
        return {"loss": loss, "risk": risk, "penalty": penalty}



@register_method("pgi_inferred")
class PGIInferred(PGI):
    """PGI over its own inferred partition (Ahmed et al.'s setting: no group labels; ERM for one epoch, then the
    partition predictor, the penalty ramped up over one epoch)."""

    requires = frozenset({"labels"})
    grouping = "inferred"
    infers = "groups"
