"""ULE: UnLearning from Experience (Mitchell, Martínez del Rincón & McLaughlin, "UnLearning from Experience to
Avoid Spurious Correlations", arXiv 2409.02792, 2024)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data import Batch
from bench.method import Method, TrainHparams, register_method

SALIENCY_OUTPUTS = ("true_logit", "predicted_logit", "loss")
NORMALISATIONS = ("none", "l2")


@dataclass
class ULEHparams(TrainHparams):
    """The paper does not publish its optimiser or λ (spec §3.3); both networks use the ERM recipe here
    (SGD lr 0.01, momentum 0.9, clip 1, batch 128). The open choices of the method are options:
    ``saliency_output`` (which output's input gradient: the true-class logit by default, the predicted
    logit, or the cross-entropy loss), ``normalise`` (none by default, or per-sample L2 of both saliency
    maps), ``same_init`` (student and teacher start from the same weights)."""

    epochs: int = 100
    lr: float = 1e-2
    momentum: float = 0.9
    unlearning_weight: float = 1.0
    saliency_output: str = "true_logit"
    normalise: str = "none"
    same_init: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unlearning_weight < 0:
            raise ValueError("unlearning_weight must be >= 0")
        if self.saliency_output not in SALIENCY_OUTPUTS:
            raise ValueError(f"saliency_output must be one of {', '.join(SALIENCY_OUTPUTS)}")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}")


def saliency(model: nn.Module, x: Tensor, y: Tensor, output: str, create_graph: bool) -> tuple[Tensor, Tensor]:
    """(logits, ∂o/∂x) with o summed over the batch (per-sample gradients are independent)."""
    logits = model(x)
    if output == "true_logit":
        score = logits.gather(1, y[:, None]).sum()
    elif output == "predicted_logit":
        score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    else:
        score = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(score, x, create_graph=create_graph, retain_graph=True)
    return logits, grad


def per_sample_l2(grad: Tensor) -> Tensor:
    return grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None, None]


@register_method("ule")
class ULE(Method):
    """ULE (Mitchell et al. 2024): a student and a teacher trained in parallel on the same batches. The
    student minimises CE(s(x), y) and is free to learn the shortcut. The teacher minimises
    CE(t(x), y) + λ · MSE(∂o_t/∂x, −∂o_s/∂x), pushing its input-gradient saliency to the opposite of the
    student's (the student's saliency is a constant for it, so the student gets no gradient from this
    term). The teacher is the reported model (``predict``)."""

    Hparams = ULEHparams
    protocols = {"fast": {"epochs": 2}}
    requires = frozenset({"labels"})

    def build(self) -> None:
        self.model = self.new_model()  # ULE's teacher: the reported, debiased model
        self.student = copy.deepcopy(self.model) if self.hp.same_init else self.new_model()
        self.teacher_params = self.trainable(self.model)
        self.student_params = self.trainable(self.student)
        self.optimizer = self.sgd(self.teacher_params)
        self.student_optimizer = self.sgd(self.student_params)

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, self.student_optimizer]

    def losses(self, batch: Batch, create_graph: bool) -> dict[str, Tensor]:
        hp = self.hp
        x = batch.x.detach().requires_grad_(True)
        student_logits, student_saliency = saliency(self.student, x, batch.y, hp.saliency_output, False)
        teacher_logits, teacher_saliency = saliency(self.model, x, batch.y, hp.saliency_output, create_graph)
        target = -student_saliency.detach()
        if hp.normalise == "l2":
            teacher_saliency, target = per_sample_l2(teacher_saliency), per_sample_l2(target)
        unlearning = F.mse_loss(teacher_saliency, target)
        teacher_ce = F.cross_entropy(teacher_logits, batch.y)
        return {"student_loss": F.cross_entropy(student_logits, batch.y), "teacher_ce": teacher_ce,
                "unlearning_loss": unlearning, "teacher_loss": teacher_ce + hp.unlearning_weight * unlearning}

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        self.student_optimizer.zero_grad(set_to_none=True)
        logs = self.losses(batch, create_graph=True)
        # the two objectives touch disjoint parameters: one backward serves both
        (logs["student_loss"] + logs["teacher_loss"]).backward()
        logs = {k: v.detach() for k, v in logs.items()}
        logs["loss"] = logs["teacher_loss"]
        logs["student_grad_norm"] = self.clip_and_step(self.student_optimizer, self.student_params)
        logs["grad_norm"] = self.clip_and_step(self.optimizer, self.teacher_params)
        return logs

    def val_loss(self, batch: Batch) -> Tensor:
        """The teacher's cross-entropy (the reported model's objective without the unlearning term, which
        needs gradients)."""
        return F.cross_entropy(self.predict(batch.x), batch.y)

    def train(self) -> None:
        self.model.train()
        self.student.train()

    def eval(self) -> None:
        self.model.eval()
        self.student.eval()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "student": self.student.state_dict(),
                "student_optimizer": self.student_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.student.load_state_dict(state["student"])
        self.student_optimizer.load_state_dict(state["student_optimizer"])
