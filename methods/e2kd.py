"""Explanation-enhanced knowledge distillation, e²KD (Parchami-Araghi, Böhle, Rao & Schiele, "Good Teachers
Explain: Explanation-Enhanced Knowledge Distillation", ECCV 2024), and its KD-only baseline (λ = 0)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.explain import explain_with_logits
from bench.losses import soft_kl
from bench.method import TeacherStudentMethod, TrainHparams, register_method

EXPLANATIONS = ("gradcam", "bcos")  # bcos: B-cos models (bcos_resnet*) and their dynamic linear maps


@dataclass
class E2KDHparams(TrainHparams):
    """The released standard-CNN configuration (spec §2.6): AdamW lr 0.01, weight decay 1e-4, grad-norm
    clip 1, cosine schedule with 5 linear warm-up epochs from 0.01 × lr, no label loss; τ ∈ {1, 5} and
    λ ∈ {0, 1, 5, 10} in the authors' grids (defaults here τ = 1, λ = 1). The Waterbirds-100 experiment (Sec. 4.2,
    Fig. 2) trains 700 epochs with random crop and horizontal flip (Sec. 4: "unless specified otherwise, we
    augment images via random horizontal flipping and random cropping") and keeps the checkpoint of best
    validation top-1 accuracy (selection rule ``iid_val_acc``). ``frozen_explanations``: the teacher's logits
    and maps are computed once per training image (Sec. 4.4 of the paper; no augmentation then)."""

    epochs: int = 700
    augment: str = "crop_flip"
    lr: float = 1e-2
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    temperature: float = 1.0
    explanation_weight: float = 1.0
    explanation: str = "gradcam"
    frozen_explanations: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0 or self.explanation_weight < 0:
            raise ValueError("temperature must be > 0 and explanation_weight >= 0")
        if self.warmup_epochs < 0:
            raise ValueError("warmup_epochs must be >= 0")
        if self.frozen_explanations and self.augment != "none":
            raise ValueError("frozen_explanations are of the un-augmented training images: pass augment=none with it")
        if self.explanation not in EXPLANATIONS:
            raise ValueError(f"explanation must be one of {', '.join(EXPLANATIONS)}, got {self.explanation!r}")


def explanation_distance(student_map: Tensor, teacher_map: Tensor, size: tuple[int, int]) -> Tensor:
    """mean over the batch of 1 − cos(vec E_T, vec E_S), both maps resized (bilinear, no antialias) to
    ``size`` first so that models with different feature resolutions compare (e²KD Eq. 3)."""
    def flat(heatmap: Tensor) -> Tensor:
        resized = F.interpolate(heatmap, size=size, mode="bilinear", align_corners=False, antialias=False)
        return resized.flatten(1)

    return (1 - F.cosine_similarity(flat(student_map), flat(teacher_map), dim=1, eps=1e-8)).mean()


def warmup_cosine(epoch: int, epochs: int, warmup: int) -> float:
    """Learning-rate factor of ``epoch``: linear from 0.01 to 1 over ``warmup`` epochs, then cosine to 0."""
    if epoch < warmup:
        return 0.01 + 0.99 * epoch / warmup
    progress = (epoch - warmup) / max(1, epochs - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


@register_method("e2kd")
class E2KD(TeacherStudentMethod):
    """e²KD (Parchami-Araghi et al. 2024, Eq. 1-3): L = τ² · KL(p_T^τ ‖ p_S^τ) + λ · (1 − cos(E_T, E_S)),
    where E is the Grad-CAM map of the last feature layer for the teacher's top-1 class ĉ (for both
    models), the student's map differentiable (double backward) and the teacher's detached, both resized
    to the input resolution. No label loss, as in the released configurations. With ``explanation=bcos``
    (B-cos models, e.g. ``--model bcos_resnet18``) E is the dynamic linear map W(x) over [x, 1 − x] (Sec. 3.1
    of the paper), compared by cosine over all 6·H·W values."""

    Hparams = E2KDHparams
    protocols = {"fast": {"epochs": 6, "warmup_epochs": 1}}
    requires = frozenset({"teacher"})
    step_schedule = False  # warm-up and cosine decay (on_epoch_start)

    def build(self) -> None:
        self.model = self.new_model()
        self.params = self.trainable()
        self.optimizer = torch.optim.AdamW(self.params, lr=self.hp.lr, weight_decay=self.hp.weight_decay)
        self.frozen: dict[str, Tensor] = {}
        if self.hp.frozen_explanations:
            self.frozen = self._teacher_outputs_of_the_training_set()

    def on_epoch_start(self, epoch: int) -> None:
        factor = warmup_cosine(epoch, self.hp.epochs, self.hp.warmup_epochs)
        assert self.optimizer is not None
        for group in self.optimizer.param_groups:
            group["lr"] = self.hp.lr * factor

    # --- the teacher's side ----------------------------------------------------------------------------
    def _teacher_outputs_of_the_training_set(self) -> dict[str, Tensor]:
        """"Frozen explanations": the teacher's logits and maps of every training image, computed once."""
        assert self.ctx.train is not None
        logits, maps = [], []
        for batch in self.ctx.train.batches(256):
            heatmap, teacher_logits, _ = self._teacher_explanation(batch)
            logits.append(teacher_logits)
            maps.append(heatmap)
        return {"logits": torch.cat(logits), "maps": torch.cat(maps)}

    def _teacher_explanation(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(map, logits, top-1 class) of the teacher, from one forward pass, detached."""
        return explain_with_logits(self.teacher, self.teacher_input(batch), lambda z: z.argmax(1),
                                   self.hp.explanation)

    def teacher_side(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        if self.frozen and batch.index is not None:
            logits = self.frozen["logits"][batch.index]
            return self.frozen["maps"][batch.index], logits, logits.argmax(1)
        return self._teacher_explanation(batch)

    # --- the loss ----------------------------------------------------------------------------------------
    def losses(self, batch: Batch, train: bool) -> dict[str, Tensor]:
        teacher_map, teacher_logits, target = self.teacher_side(batch)
        if self.hp.explanation_weight > 0:
            student_map, student_logits, _ = explain_with_logits(self.model, batch.x, target, self.hp.explanation,
                                                                 create_graph=train)
            if self.hp.explanation == "bcos":  # explanation mode detaches the dynamic scalings: KD needs a
                student_logits = self.model(batch.x)  # forward with full gradients
            height, width = batch.x.shape[-2:]
            explanation = explanation_distance(student_map, teacher_map, (height, width))
        else:  # the KD baseline: no explanation is computed at all
            student_logits = self.model(batch.x)
            explanation = torch.zeros((), device=batch.x.device)
        kd = soft_kl(student_logits, teacher_logits, self.hp.temperature)
        return {"kd_loss": kd, "explanation_loss": explanation, "loss": kd + self.hp.explanation_weight * explanation}

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        return self.descend(self.losses(batch, train=True))

    def val_loss(self, batch: Batch) -> Tensor:
        """The e²KD objective on the (biased) validation split, the teacher's maps computed live."""
        frozen, self.frozen = self.frozen, {}
        try:
            with torch.enable_grad():
                return self.losses(batch, train=False)["loss"].detach()
        finally:
            self.frozen = frozen

    def state_dict(self) -> dict[str, object]:
        return {**super().state_dict(), "frozen": self.frozen}

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        self.frozen = dict(state.get("frozen") or {})  # type: ignore[call-overload]


@dataclass
class KDBaselineHparams(E2KDHparams):
    """e²KD's KD baseline: the same optimiser, schedule and temperature, λ = 0."""

    explanation_weight: float = 0.0


@register_method("e2kd_kd")
class E2KDBaseline(E2KD):
    """The KD baseline of e²KD (Parchami-Araghi et al. 2024): L = τ² · KL(p_T^τ ‖ p_S^τ), trained exactly like
    ``e2kd`` with λ = 0 (the authors run their KD baseline this way)."""

    Hparams = KDBaselineHparams

