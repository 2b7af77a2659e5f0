"""Empirical risk minimisation: the no-debiasing baseline."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.method import Method, TrainHparams, register_method

OPTIMIZERS = ("sgd", "adam")


@dataclass
class ERMHparams(TrainHparams):
    """The distillation paper's ERM run (seed 001, appendix A.3: "In COLOURED MNIST, we consistently train for
    100 epochs, momentum 0.99, learning rate of 0.01 and batches of 128"; the public ``mnist/RunERM.py`` uses
    momentum 0.9, the paper wins): SGD lr 1e-2, momentum 0.99, no weight decay, grad-norm clip 1, batch 128.
    ``optimizer="adam"`` (lr, no momentum) is the vanilla recipe of the debiasing papers on LfF's Colored MNIST
    (seed 003's CE stage, DFA and DCWP: Adam lr 0.01, batch 256)."""

    epochs: int = 100
    lr: float = 1e-2
    momentum: float = 0.99
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")


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

    def build(self) -> None:
        self.model = self.new_model()
        if self.hp.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.hp.lr, weight_decay=self.hp.weight_decay,
                                              capturable=self.device.type == "cuda")  # CUDA-graph replay
        else:
            self.optimizer = self.sgd(self.model.parameters())
        self.params = self.trainable()

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(batch.x), batch.y)
        loss.backward()
        grad_norm = self.clip_and_step(self.optimizer, self.params)
        return {"loss": loss.detach(), "grad_norm": grad_norm}
