"""Knowledge distillation of the teacher's softened outputs (Hinton, Vinyals & Dean, 2015)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.losses import soft_kl
from bench.method import TeacherStudentMethod, TrainHparams, register_method


@dataclass
class KDHparams(TrainHparams):
    """The distillation paper's output-distillation run: T = 3, no label loss, SGD lr 1e-2,
    momentum 0.99, clip 1, batch 128, 100 epochs, trainable last layer."""

    epochs: int = 100
    lr: float = 1e-2
    momentum: float = 0.99
    temperature: float = 3.0
    label_weight: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if not 0 <= self.label_weight <= 1:
            raise ValueError("label_weight must be in [0, 1]")


class _Distill(TeacherStudentMethod):
    """Shared machinery of output distillation."""

    Hparams = KDHparams
    graph_capturable = True

    def objective(self, batch: Batch, student_logits: Tensor) -> Tensor:
        loss = soft_kl(student_logits, self.teacher_logits(batch), self.hp.temperature)
        if self.hp.label_weight > 0:
            loss = (1 - self.hp.label_weight) * loss + self.hp.label_weight * F.cross_entropy(student_logits, batch.y)
        return loss

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(batch, self.model(batch.x))
        loss.backward()
        grad_norm = self.clip_and_step(self.optimizer, self.params)
        return {"loss": loss.detach(), "grad_norm": grad_norm}

    def val_loss(self, batch: Batch) -> Tensor:
        return self.objective(batch, self.predict(batch.x))


@register_method("output_distill")
class OutputDistill(_Distill):
    """Output distillation without labels: L = τ² · KL(p_T^τ ‖ p_S^τ), τ = 3.

    The "Output Distill" row of Table 1 of Bassi et al. (2024) (COLOURED MNIST: 100 / 92.6 / 87.3),
    i.e. Hinton et al. (2015) Eq. 2 with the hard-label term switched off.
    """

    protocols = {"fast": {"epochs": 4}}
    requires = frozenset({"teacher"})


@dataclass
class KDWithLabelsHparams(KDHparams):
    """As ``KDHparams``, with half of the loss on the hard labels by default."""

    label_weight: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.label_weight <= 0:
            raise ValueError("label_weight must be > 0 for kd (use output_distill for the label-free loss)")


@register_method("kd")
class KD(_Distill):
    """Hinton et al. (2015), Section 2, with the label loss:
    L = w · CE(s, y) + (1 − w) · τ² · KL(p_T^τ ‖ p_S^τ), w = ``label_weight`` (default 0.5)."""

    Hparams = KDWithLabelsHparams
    protocols = {"fast": {"epochs": 4}}
    requires = frozenset({"labels", "teacher"})
