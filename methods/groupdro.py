"""Group distributionally robust optimisation (Sagawa, Koh, Hashimoto & Liang, "Distributionally Robust Neural
Networks for Group Shifts", ICLR 2020), with the dataset's group labels (``groupdro``) or with Ahmed et al.'s
inferred partition (``groupdro_inferred``, the GroupDRO* row of Table 1 of Bassi et al. 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.method import register_method
from methods._groups import GroupHparams, GroupMethod, group_means


@dataclass
class GroupDROHparams(GroupHparams):
    """Sagawa et al.'s Waterbirds run (SGD momentum 0.9, lr 1e-3, batch 128, weight decay 1e-4, group step size
    η = 0.01, generalisation adjustment C = 0); ``normalize_losses`` is Ahmed et al.'s variant (group losses
    divided by their sum before the exponentiated step, "seemed to help")."""

    epochs: int = 300
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    step_size: float = 0.01
    adjustment: float = 0.0
    normalize_losses: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step_size < 0 or self.adjustment < 0:
            raise ValueError("step_size and adjustment must be >= 0")


def dro_update(q: Tensor, group_losses: Tensor, present: Tensor, step_size: float) -> Tensor:
    """Algorithm 1's online step: q_g ← q_g exp(η ℓ_g) for the groups in the batch, then renormalise."""
    q = q * torch.exp(step_size * group_losses * present)
    return q / q.sum()


@register_method("groupdro")
class GroupDRO(GroupMethod):
    """GroupDRO (Sagawa et al. 2020, Eq. 7 and Algorithm 1): minimise max_q Σ_g q_g (ℓ_g + C/√n_g) by an online
    exponentiated-gradient step on the group weights q (step size η) before each descent step on Σ_g q_g ℓ_g;
    ℓ_g is the batch's mean loss of group g and n_g its size in the training split (C: the generalisation
    adjustment). Batches are sampled uniformly (the paper's Algorithm 1; its code can also re-weight sampling)."""

    Hparams = GroupDROHparams
    protocols = {"fast": {"epochs": 2}}
    requires = frozenset({"labels", "group_labels"})
    extra_state = ("q",)

    def build(self) -> None:
        super().build()
        self.q = torch.full((self.n_groups,), 1.0 / self.n_groups, device=self.device)
        self._set_adjustment()

    def _set_adjustment(self) -> None:
        """C/√n_g, n_g the size of group g in the training split (under the current partition)."""
        counts = torch.bincount(self.partition, minlength=self.n_groups).float()
        self.adjust = self.hp.adjustment / counts.clamp(min=1).sqrt()

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if self.grouping == "inferred" and epoch == self.hp.partition_epochs:
            self.q.fill_(1.0 / self.n_groups)
            self._set_adjustment()

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        per_sample = F.cross_entropy(self.model(batch.x), batch.y, reduction="none")
        means, present = group_means(per_sample, self.groups_of(batch), self.n_groups)
        adjusted = (means + self.adjust) * present
        signal = adjusted.detach()
        if self.hp.normalize_losses:
            signal = signal / signal.sum().clamp(min=1e-12)
        active = self.penalty_scale > 0  # the inferred variant is plain ERM until its partition exists
        q = torch.where(active, dro_update(self.q, signal, present, self.hp.step_size), self.q)
        self.q.copy_(q)
        robust = (q * adjusted).sum()
        loss = torch.where(active, robust, per_sample.mean())
        return {"loss": loss, "ce": per_sample.mean(), "worst_group_loss": (means * present).max()}

    def epoch_metrics(self) -> dict[str, float]:
        return {**super().epoch_metrics(), **{f"dro_q_{g}": float(v) for g, v in enumerate(self.q.tolist())}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._set_adjustment()


@dataclass
class GroupDROInferredHparams(GroupDROHparams):
    normalize_losses: bool = True


@register_method("groupdro_inferred")
class GroupDROInferred(GroupDRO):
    """GroupDRO over Ahmed et al.'s inferred majority/minority partition (no group labels), with their
    normalised group losses. (Their run also samples the two sides half and half; here batches stay uniform.)"""

    Hparams = GroupDROInferredHparams
    requires = frozenset({"labels"})
    grouping = "inferred"
    infers = "groups"
