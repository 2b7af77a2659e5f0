"""Invariant risk minimisation, IRMv1 (Arjovsky, Bottou, Gulrajani & Lopez-Paz, "Invariant Risk Minimization",
2019), with the dataset's groups as environments (``irm``) or Ahmed et al.'s inferred partition (``irm_inferred``,
the IRM* row of Table 1 of Bassi et al. 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.method import register_method
from methods._groups import GroupHparams, GroupMethod, balanced_risk, group_means


@dataclass
class IRMHparams(GroupHparams):
    """Arjovsky et al.'s Colored MNIST settings (their reference script): penalty weight λ = 91257.18 after
    ``anneal_epochs`` epochs at weight 1, the total loss divided by λ when λ > 1; weight decay 1e-3. The optimiser
    is the suite's SGD (momentum 0.9, lr 1e-2; their script uses Adam lr 1e-3 on an MLP)."""

    epochs: int = 100
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-3
    penalty_weight: float = 91257.18
    anneal_epochs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.penalty_weight < 0 or self.anneal_epochs < 0:
            raise ValueError("penalty_weight and anneal_epochs must be >= 0")


def irm_penalties(logits: Tensor, y: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """IRMv1's per-environment penalty ‖∇_{w | w = 1} R^e(w · f)‖² (a scalar dummy classifier w) and the presence
    mask. ∂/∂w CE(w z, y) at w = 1 is Σ_k z_k (p_k − 1[k = y]), so R^e's gradient is its per-environment mean,
    and its square keeps the graph for the double backward."""
    per_sample = (logits * (F.softmax(logits, dim=1) - F.one_hot(y, logits.shape[1]).to(logits.dtype))).sum(1)
    grads, present = group_means(per_sample, groups, n_groups)
    return grads.pow(2), present


@register_method("irm")
class IRM(GroupMethod):
    """IRMv1 (Arjovsky et al. 2019, Eq. IRMv1): min Σ_e R^e(f) + λ ‖∇_{w | w = 1.0} R^e(w · f)‖², environments
    e = the groups present in the batch, R^e each one's mean cross-entropy (the risk averaged over environments,
    as in Ahmed et al.); λ = 1 for the first ``anneal_epochs`` epochs, then ``penalty_weight``, with the loss
    divided by λ when λ > 1 (Arjovsky et al.'s reference code)."""

    Hparams = IRMHparams
    protocols = {"fast": {"epochs": 2}}
    requires = frozenset({"labels", "group_labels"})
    extra_state = ("weight",)

    def build(self) -> None:
        super().build()
        self.weight = torch.tensor(1.0, device=self.device)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        annealed = epoch >= self.start_epoch + self.hp.anneal_epochs
        self.weight.fill_(self.hp.penalty_weight if annealed else 1.0)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.model(batch.x)
        groups = self.groups_of(batch)
        per_sample = F.cross_entropy(logits, batch.y, reduction="none")
        risk = balanced_risk(per_sample, groups, self.n_groups)
        penalties, present = irm_penalties(logits, batch.y, groups, self.n_groups)
        penalty = (penalties * present).sum() / present.sum().clamp(min=1)
        weight = self.weight * self.penalty_scale
        loss = (risk + weight * penalty) / torch.clamp(weight, min=1.0)
        return {"loss": loss, "risk": risk, "penalty": penalty}



@register_method("irm_inferred")
class IRMInferred(IRM):
    """IRMv1 over Ahmed et al.'s inferred majority/minority partition (no group labels): ERM for
    ``partition_epochs``, then the two inferred sides as environments, the penalty ramped up."""

    requires = frozenset({"labels"})
    grouping = "inferred"
    infers = "groups"
