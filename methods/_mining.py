"""Shared pieces of the bias-mining methods (LfF, DFA): per-sample loss averages kept over training, normalised
per class, and the relative-difficulty weight built from them (Nam et al., "Learning from Failure: Training
Debiased Classifier from Biased Classifier", NeurIPS 2020, Eq. 2 and the authors' ``util.EMA``)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.data import BudgetedSplit


class LossEMA:
    """An exponential moving average of each training sample's loss (the first visit sets it), and its value
    divided by the largest average among the samples of the same class (over the whole table, as the authors'
    code does, unvisited samples counting as 0)."""

    def __init__(self, labels: Tensor, num_classes: int, alpha: float) -> None:
        self.labels = labels
        self.num_classes = num_classes
        self.alpha = alpha
        self.values = torch.zeros(len(labels), device=labels.device)
        self.seen = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)

    def update(self, index: Tensor, losses: Tensor) -> None:
        old = self.values[index]
        self.values[index] = torch.where(self.seen[index], self.alpha * old + (1 - self.alpha) * losses, losses)
        self.seen[index] = True

    def normalised_all(self) -> Tensor:
        return self.normalised(torch.arange(len(self.values), device=self.values.device))

    def normalised(self, index: Tensor) -> Tensor:
        class_max = torch.zeros(self.num_classes, device=self.values.device).scatter_reduce(
            0, self.labels, self.values, reduce="amax", include_self=True)
        return self.values[index] / class_max[self.labels[index]].clamp(min=1e-8)

    def state_dict(self) -> dict[str, Tensor]:
        return {"values": self.values, "seen": self.seen, "labels": self.labels}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.labels.device
        self.values, self.seen, self.labels = (state[k].to(device) for k in ("values", "seen", "labels"))


def upweighted(biased: LossEMA, debiased: LossEMA) -> Tensor | None:
    """The samples LfF's weighting favours, W(x) > 1/2 (the biased model's normalised loss above the debiased
    one's); None before every sample has been seen once."""
    if not bool(biased.seen.all()):
        return None
    return relative_difficulty(biased.normalised_all(), debiased.normalised_all()) > 0.5


def relative_difficulty(biased: Tensor, debiased: Tensor) -> Tensor:
    """W(x) = ℓ̃_B / (ℓ̃_B + ℓ̃_D + 1e-8) (Nam et al. Eq. 2, with the normalised loss averages): near 1 for samples
    the biased model fails on and the debiased one does not."""
    return biased / (biased + debiased + 1e-8)


@torch.no_grad()
def correct_on(model: nn.Module, split: BudgetedSplit) -> Tensor:
    """Which samples of ``split`` ``model`` classifies correctly (eval mode; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    hits = torch.cat([model(b.x).argmax(1) == b.y for b in split.batches(1024)])
    model.train(was_training)
    return hits
