"""Debiased contrastive weight pruning (DCWP; Park, Lee, Lee, Kim & Hwang, "Training Debiased Subnetworks with
Contrastive Weight Pruning", CVPR 2023): a row of Table 1 of the neuron-differentiation paper (seed 003), whose
mask machinery neuron differentiation builds on."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bench.data import Batch
from bench.losses import gce, weighted_mean
from bench.method import Method, TrainHparams, register_method
from methods._groups import penultimate
from methods._mining import correct_on
from methods.neuron_diff import masked_weight_names

STAGES = ("pretrain", "prune", "retrain")


@dataclass
class DCWPHparams(TrainHparams):
    """The authors' Colored MNIST run (spec §4.3): Adam; a classifier (cross-entropy) and a biased classifier
    (GCE, q = 0.7) pre-trained together at lr 0.01 for 10,000 steps (53 epochs of 48,000 images at batch 256);
    mask logits initialised at 1.5 and learned for 2,000 steps (11 epochs) at lr 0.01 with the pseudo-conflicting
    samples weighted ×80, λ_sparse = 1e-8 and the contrastive weight 0.05; re-training of the weights under the
    frozen masks for 1,000 steps (5 epochs) at lr 1e-3 with λ_up (80 / 50 / 30 / 10 at 0.5 / 1 / 2 / 5 %).
    ``epochs`` counts all three stages; the last ``prune_epochs + retrain_epochs`` are the mask and re-training
    stages. The authors up-sample in the loader; here the loss weights the samples (same expected gradient)."""

    epochs: int = 69
    batch_size: int = 256
    lr: float = 1e-2
    grad_clip: float = 0.0
    gce_q: float = 0.7
    prune_epochs: int = 11
    retrain_epochs: int = 5
    prune_lr: float = 1e-2
    retrain_lr: float = 1e-3
    mask_init: float = 1.5
    temperature: float = 1.0
    sparsity_weight: float = 1e-8
    prune_upweight: float = 80.0
    upweight: float = 50.0
    contrastive_weight: float = 0.05
    contrastive_temperature: float = 0.07

    def __post_init__(self) -> None:
        super().__post_init__()
        # no pre-training (epochs = prune_epochs + retrain_epochs) is allowed for timing the mask step: the masks
        # then start on a random network and no sample is pseudo-conflicting
        if self.prune_epochs < 1 or self.retrain_epochs < 1 or self.pretrain_epochs < 0:
            raise ValueError("need prune_epochs >= 1, retrain_epochs >= 1 and epochs >= prune_epochs + retrain_epochs")
        if min(self.prune_upweight, self.upweight) < 1 or self.temperature <= 0 or self.contrastive_temperature <= 0:
            raise ValueError("upweights must be >= 1 and temperatures > 0")

    @property
    def pretrain_epochs(self) -> int:
        return self.epochs - self.prune_epochs - self.retrain_epochs

    def stage(self, epoch: int) -> str:
        if epoch < self.pretrain_epochs:
            return "pretrain"
        return "prune" if epoch < self.pretrain_epochs + self.prune_epochs else "retrain"


def dcwp_gumbel_sigmoid(logits: Tensor, temperature: float, eps: float = 1e-10) -> Tensor:
    """DCWP's hard straight-through gate (``prune/GumbelSigmoid.py``): the logistic noise
    −log(log(u₁ + ε) / log(u₀ + ε) + ε) is added to σ(π), not to π, then 1[σ((σ(π) + n)/τ) > 0.5] forward and the
    soft value's gradient backward."""
    u0, u1 = torch.rand_like(logits), torch.rand_like(logits)
    noise = -torch.log(torch.log(u1 + eps) / torch.log(u0 + eps) + eps)
    soft = torch.sigmoid((torch.sigmoid(logits) + noise) / temperature)
    return (soft > 0.5).to(soft.dtype) + soft - soft.detach()


def debiased_supcon(features: Tensor, y: Tensor, conflicting: Tensor, temperature: float) -> Tensor:
    """DCWP's contrastive term (``prune/Loss.py``, a supervised contrastive loss after Khosla et al. 2020) on
    L2-normalised features: for each anchor i, the positives are the other samples j of its class that are
    pseudo-conflicting (the authors' code intends "i or j conflicting", but its 1-D masks broadcast to "j
    conflicting", which is what it computes and what this does); the denominator runs over every j ≠ i; anchors
    without a positive are left out; −(mean over positives of log p_ij), averaged over anchors (τ = base τ)."""
    z = F.normalize(features, dim=1)
    logits = z @ z.T / temperature
    logits = logits - logits.max(1, keepdim=True).values.detach()
    n = len(y)
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    positive = (y[:, None] == y[None, :]) & conflicting[None, :] & not_self
    log_prob = logits - torch.log((logits.exp() * not_self).sum(1, keepdim=True))
    count = positive.sum(1)
    per_anchor = (log_prob * positive).sum(1) / count.clamp(min=1)
    valid = (count > 0).to(z.dtype)
    return -(per_anchor * valid).sum() / valid.sum().clamp(min=1)


@register_method("dcwp")
class DCWP(Method):
    """DCWP (Park et al. 2023): (1) pre-train the classifier with cross-entropy and a biased classifier with GCE;
    (2) the biased classifier's training mistakes are the pseudo-conflicting samples; (3) learn a mask logit π per
    conv/linear weight (θ frozen) through DCWP's Gumbel-sigmoid gates, with cross-entropy weighting the
    pseudo-conflicting samples ×80, λ_sparse Σπ and the debiased contrastive term; (4) fix the masks at 1[π ≥ 0]
    and re-train θ with the pseudo-conflicting samples weighted λ_up and the contrastive term. The masked network
    is the predictor; only re-training epochs are selectable."""

    Hparams = DCWPHparams
    protocols = {"fast": {"epochs": 3, "prune_epochs": 1, "retrain_epochs": 1, "batch_size": 128}}
    requires = frozenset({"labels"})
    step_schedule = False  # its stages set their optimisers and rates
    perf_hparams = {"epochs": 6, "prune_epochs": 5, "retrain_epochs": 1}  # time the mask step, the costliest

    def build(self) -> None:
        assert self.ctx.train is not None
        hp = self.hp
        self.model = self.new_model()
        self.biased = self.new_model()
        self.names = masked_weight_names(self.model)
        shapes = dict(self.model.named_parameters())
        self.mask_logits = nn.ParameterList(
            [nn.Parameter(torch.full_like(shapes[name], hp.mask_init)) for name in self.names]).to(self.device)
        self.conflicting = torch.zeros(len(self.ctx.train), dtype=torch.bool, device=self.device)
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "pretrain": torch.optim.Adam([*self.model.parameters(), *self.biased.parameters()], lr=hp.lr,
                                         weight_decay=hp.weight_decay),
            "prune": torch.optim.Adam(self.mask_logits.parameters(), lr=hp.prune_lr),
            "retrain": torch.optim.Adam(self.model.parameters(), lr=hp.retrain_lr, weight_decay=hp.weight_decay),
        }
        self.current = ""
        self._enter(hp.stage(0))

    # --- stages ------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        stage = self.hp.stage(epoch)
        if stage != self.current:
            self._enter(stage)

    def _enter(self, stage: str) -> None:
        if stage == "prune" and self.current == "pretrain":  # mining: the biased classifier's mistakes
            assert self.ctx.train is not None
            self.conflicting = ~correct_on(self.biased, self.ctx.train)
        pruning = stage == "prune"
        self.model.requires_grad_(stage != "prune")
        self.mask_logits.requires_grad_(pruning)
        self.optimizer = self.optimizers[stage]
        self.current = stage
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]

    def gates(self, sample: bool) -> list[Tensor]:
        if sample:
            return [dcwp_gumbel_sigmoid(p, self.hp.temperature) for p in self.mask_logits]
        return [(p >= 0).to(p.dtype) for p in self.mask_logits]

    def masked(self, x: Tensor, gates: list[Tensor]) -> Tensor:
        params = dict(self.model.named_parameters())
        weights = {name: params[name] * gate for name, gate in zip(self.names, gates, strict=True)}
        return functional_call(self.model, weights, (x,))

    # --- steps -------------------------------------------------------------------------------------
    def masked_losses(self, batch: Batch, upweight: float, sample: bool) -> dict[str, Tensor]:
        assert batch.index is not None
        gates = self.gates(sample)
        features, logits = penultimate(self.model, batch.x, lambda x: self.masked(x, gates))
        conflicting = self.conflicting[batch.index]
        weight = torch.where(conflicting, upweight, 1.0)
        ce = weighted_mean(F.cross_entropy(logits, batch.y, reduction="none"), weight)
        contrastive = debiased_supcon(features, batch.y, conflicting, self.hp.contrastive_temperature)
        logs = {"ce": ce, "contrastive": contrastive, "loss": ce + self.hp.contrastive_weight * contrastive}
        if sample:
            sparsity = torch.stack([p.sum() for p in self.mask_logits]).sum()
            logs["sparsity"] = sparsity
            logs["loss"] = logs["loss"] + self.hp.sparsity_weight * sparsity
        return logs

    def step(self, batch: Batch) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        if self.current == "pretrain":
            ce = F.cross_entropy(self.model(batch.x), batch.y)
            biased = gce(self.biased(batch.x), batch.y, self.hp.gce_q).mean()
            logs = {"loss": ce + biased, "ce": ce, "gce": biased}
        elif self.current == "prune":
            logs = self.masked_losses(batch, self.hp.prune_upweight, sample=True)
        else:
            logs = self.masked_losses(batch, self.hp.upweight, sample=False)
        return self.descend(logs)

    def selectable(self) -> bool:
        return self.current == "retrain"

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x) if self.current == "pretrain" else self.masked(x, self.gates(sample=False))

    def predictor(self) -> nn.Module:
        """After pre-training, a copy of the network with the binary masks applied to its weights."""
        if self.current == "pretrain":
            return self.model
        masked = copy.deepcopy(self.model)
        params = dict(masked.named_parameters())
        with torch.no_grad():
            for name, gate in zip(self.names, self.gates(sample=False), strict=True):
                params[name].mul_(gate)
        return masked

    def train(self) -> None:
        self.model.train()
        self.biased.train()

    def eval(self) -> None:
        self.model.eval()
        self.biased.eval()

    def mined_minority(self) -> Tensor | None:
        return None if self.current == "pretrain" else self.conflicting.bool()

    def epoch_metrics(self) -> dict[str, float]:
        if self.current == "pretrain":
            return {}
        kept = torch.cat([(p >= 0).flatten() for p in self.mask_logits]).float().mean()
        return {"dcwp_kept": float(kept), "dcwp_conflicting_share": float(self.conflicting.float().mean())}

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "biased": self.biased.state_dict(),
                "mask_logits": self.mask_logits.state_dict(), "conflicting": self.conflicting,
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}, "stage": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = ""  # enter the saved stage without its transition work (mining)
        self._enter(state["stage"])
        self.model.load_state_dict(state["model"])
        self.biased.load_state_dict(state["biased"])
        self.mask_logits.load_state_dict(state["mask_logits"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.conflicting = state["conflicting"].to(self.device)

    def trainable(self, module: nn.Module | None = None) -> list[Tensor]:
        return super().trainable(module) if module is not None else list(self.params)
