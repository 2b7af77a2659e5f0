"""Learning from Failure (Nam, Cha, Ahn, Lee & Shin, "Learning from Failure: Training Debiased Classifier from
Biased Classifier", NeurIPS 2020): a row of Table 1 of the neuron-differentiation paper (seed 003)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.losses import gce
from bench.method import Method, TrainHparams, register_method
from methods._mining import LossEMA, relative_difficulty, upweighted


@dataclass
class LfFHparams(TrainHparams):
    """The authors' Colored MNIST run (``config.py``): Adam lr 1e-3, no weight decay, batch 256, 100 epochs
    (23,500 steps on 60,000 images), GCE q = 0.7, loss averages with α = 0.7; no gradient clipping."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    grad_clip: float = 0.0
    gce_q: float = 0.7
    ema_alpha: float = 0.7

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.gce_q <= 1 or not 0 <= self.ema_alpha < 1:
            raise ValueError("need 0 < gce_q <= 1 and 0 <= ema_alpha < 1")


def label_table(method: Method) -> Tensor:
    """The labels of the whole training split, in sample order (for per-class normalisation)."""
    assert method.ctx.train is not None
    return torch.cat([b.y for b in method.ctx.train.batches(4096)]).to(method.device)


@register_method("lff")
class LfF(Method):
    """LfF (Nam et al. 2020, Algorithm 1): a biased model f_B trained with generalised cross-entropy (Eq. 1,
    q = 0.7) and, on the same batches, a debiased model f_D trained with cross-entropy weighted per sample by
    the relative difficulty W(x) = ℓ̃_B / (ℓ̃_B + ℓ̃_D) (Eq. 2), ℓ̃ each model's per-sample loss averaged over
    training (α = 0.7) and divided by its class's largest average. One backward of mean GCE(f_B) + mean W·CE(f_D)
    updates both; f_D is the predictor."""

    Hparams = LfFHparams
    protocols = {"fast": {"epochs": 2, "batch_size": 128}}
    requires = frozenset({"labels"})

    def build(self) -> None:
        self.model = self.new_model()  # f_D, the predictor
        self.biased = self.new_model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.hp.lr, weight_decay=self.hp.weight_decay)
        self.optimizer_b = torch.optim.Adam(self.biased.parameters(), lr=self.hp.lr,
                                            weight_decay=self.hp.weight_decay)
        self.params, self.params_b = self.trainable(), self.trainable(self.biased)
        labels = label_table(self)
        self.ema_b = LossEMA(labels, self.ctx.num_classes, self.hp.ema_alpha)
        self.ema_d = LossEMA(labels, self.ctx.num_classes, self.hp.ema_alpha)

    def train(self) -> None:
        super().train()
        self.biased.train()

    def eval(self) -> None:
        super().eval()
        self.biased.eval()

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        assert batch.index is not None
        logits_b, logits_d = self.biased(batch.x), self.model(batch.x)
        ce_b = F.cross_entropy(logits_b, batch.y, reduction="none").detach()
        ce_d = F.cross_entropy(logits_d, batch.y, reduction="none")
        self.ema_b.update(batch.index, ce_b)
        self.ema_d.update(batch.index, ce_d.detach())
        weight = relative_difficulty(self.ema_b.normalised(batch.index), self.ema_d.normalised(batch.index))
        loss_b = gce(logits_b, batch.y, self.hp.gce_q).mean()
        loss_d = (weight * ce_d).mean()
        return {"loss": loss_b + loss_d, "loss_b": loss_b, "loss_d": loss_d, "weight": weight.mean()}

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_b.zero_grad(set_to_none=True)
        logs = self.losses(batch)
        logs["loss"].backward()
        out = {k: v.detach() for k, v in logs.items()}
        out["grad_norm"] = self.clip_and_step(self.optimizer, self.params)
        self.clip_and_step(self.optimizer_b, self.params_b)
        return out

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, self.optimizer_b]  # type: ignore[list-item]

    def mined_minority(self) -> Tensor | None:
        return upweighted(self.ema_b, self.ema_d)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "biased": self.biased.state_dict(),
                "optimizer_b": self.optimizer_b.state_dict(), "ema_b": self.ema_b.state_dict(),
                "ema_d": self.ema_d.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.biased.load_state_dict(state["biased"])
        self.optimizer_b.load_state_dict(state["optimizer_b"])
        self.ema_b.load_state_dict(state["ema_b"])
        self.ema_d.load_state_dict(state["ema_d"])
