"""Empirical risk minimisation: the no-debiasing baseline."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.method import Method, TrainHparams, register_method


@dataclass
class ERMHparams(TrainHparams):
    """The distillation paper's ERM run (public code ``mnist/RunERM.py``; appendix A): SGD lr 1e-2,
    momentum 0.9, no weight decay, grad-norm clip 1, batch 128, 100 epochs."""

    epochs: int = 100
    lr: float = 1e-2
    momentum: float = 0.9


@register_method("erm")
class ERM(Method):
    """Cross-entropy on the labels of the (biased) training images (Vapnik, 1992).

    Loss: L = CE(f(x), y). The "ERM" row of Table 1 of Bassi et al., "Explanation is All You Need in
    Distillation" (2024), which learns the colour shortcut on COLOURED MNIST (100 / 16.93 / 0.18).
    """

    Hparams = ERMHparams
    protocols = {"fast": {"epochs": 2}}
    requires = frozenset({"labels"})
    graph_capturable = True

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(batch.x), batch.y)
        loss.backward()
        grad_norm = self.clip_and_step(self.optimizer, self.params)
        return {"loss": loss.detach(), "grad_norm": grad_norm}
