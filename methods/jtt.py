"""Just Train Twice (Liu, Haghgoo, Chen, Raghunathan, Koh, Sagawa, Liang & Finn, "Just Train Twice: Improving
Group Robustness without Training Group Information", ICML 2021)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.losses import weighted_mean
from bench.method import Method, TrainHparams, register_method
from methods._mining import correct_on


@dataclass
class JTTHparams(TrainHparams):
    """JTT's Waterbirds setting (T = 60 identification epochs, λ_up = 100, 300 final epochs, lr 1e-5, weight decay
    1.0 on an ImageNet-pretrained ResNet50; here the suite's models train from scratch, so the defaults keep the
    schedule and the suite's SGD: lr 1e-3, momentum 0.9, weight decay 1e-4). ``epochs`` counts both stages."""

    epochs: int = 360
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    id_epochs: int = 60
    upweight: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.id_epochs < self.epochs:
            raise ValueError(f"id_epochs must be in [1, epochs), got {self.id_epochs}")
        if self.upweight < 1:
            raise ValueError("upweight must be >= 1")


def error_set_weights(correct: Tensor, upweight: float) -> Tensor:
    """JTT's stage-2 weight of each training sample: λ_up for the identification model's errors, 1 otherwise."""
    return torch.where(correct, 1.0, upweight)


@register_method("jtt")
class JTT(Method):
    """JTT (Liu et al. 2021, Algorithm 1): train an identification model by ERM for T epochs; its training errors
    form the error set E; train the final model from a fresh initialisation on the training set with E up-weighted
    by λ_up. The paper up-samples E in the loader; the runner owns sampling here, so each sample's cross-entropy
    is weighted by λ_up (1 outside E) and normalised by the batch's total weight: the same expected gradient,
    with a stage-2 epoch one pass over the data. Only stage-2 epochs are selectable."""

    Hparams = JTTHparams
    protocols = {"fast": {"epochs": 2, "id_epochs": 1}}
    requires = frozenset({"labels"})

    def build(self) -> None:
        super().build()
        assert self.ctx.train is not None
        self.weights = torch.ones(len(self.ctx.train), device=self.device)
        self.stage2 = torch.tensor(False)

    def on_epoch_start(self, epoch: int) -> None:
        if epoch == self.hp.id_epochs and not bool(self.stage2):
            assert self.ctx.train is not None
            self.weights = error_set_weights(correct_on(self.model, self.ctx.train), self.hp.upweight)
            self.model = self.new_model()
            self.optimizer = self.sgd(self.model.parameters())
            self.params = self.trainable()
            self.stage2 = torch.tensor(True)

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None and batch.index is not None
        self.optimizer.zero_grad(set_to_none=True)
        per_sample = F.cross_entropy(self.model(batch.x), batch.y, reduction="none")
        return self.descend({"loss": weighted_mean(per_sample, self.weights[batch.index]), "ce": per_sample.mean()})

    def selectable(self) -> bool:
        return bool(self.stage2)

    def mined_minority(self) -> Tensor | None:
        return self.weights > 1 if bool(self.stage2) else None

    def epoch_metrics(self) -> dict[str, float]:
        return {"jtt_error_share": float((self.weights > 1).float().mean())} if bool(self.stage2) else {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "weights": self.weights, "stage2": self.stage2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage2 = state["stage2"]
        if bool(self.stage2):  # the stage-2 network: a fresh model and optimizer, then its saved state
            self.model = self.new_model()
            self.optimizer = self.sgd(self.model.parameters())
            self.params = self.trainable()
        super().load_state_dict(state)
        self.weights = state["weights"].to(self.device)
