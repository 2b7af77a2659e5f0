"""The teacher artifact: a classifier trained on the dataset's debiased view."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.method import Method, TrainHparams, register_method


@dataclass
class TeacherHparams(TrainHparams):
    """Appendix A of the distillation paper (COLOURED MNIST teacher): 200 epochs, SGD momentum 0.9,
    batch 128, lr 1e-3, weight decay 1e-3, grad-norm clip 1."""

    epochs: int = 200
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3


@register_method("teacher")
class Teacher(Method):
    """Cross-entropy on the debiased view ``x_debiased`` (randomly coloured digits for COLOURED MNIST;
    background replaced by noise for background-bias data), as in Bassi et al. (2024), Section 3.3.1
    and appendix A. The runner trains it once per (dataset, protocol), caches it in the store, reports
    it as a row (tested on a test split's debiased view where the dataset has one, else on its images)
    and hands it, frozen, to every method that needs a teacher. It validates on the debiased view of
    the validation split."""

    Hparams = TeacherHparams
    protocols = {"fast": {"epochs": 3, "lr": 5e-2, "weight_decay": 5e-4}}
    requires = frozenset({"labels", "debiased_view"})
    is_teacher = True
    train_views = ("x_debiased",)
    graph_capturable = True

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(batch.view("x_debiased")), batch.y)
        loss.backward()
        grad_norm = self.clip_and_step(self.optimizer, self.params)
        return {"loss": loss.detach(), "grad_norm": grad_norm}

    def val_loss(self, batch: Batch) -> Tensor:
        return F.cross_entropy(self.predict(batch.view("x_debiased")), batch.y)
