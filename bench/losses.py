"""Losses shared by methods (distillation, bias mining)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GEO_L1_STABILISER = 1e-10
PYRAMID_MIN_SIZE = 8


def geometric_l1(student: Tensor, teacher: Tensor) -> Tensor:
    """Eq. 6 of Bassi et al. (2024): L1 between the maps after dividing both by the geometric mean of their
    per-sample mean absolute values, m = √mean|S| · √mean|T| + 1e-10 (over all but the batch dimension;
    m is not detached). Returns the mean over batch and elements."""
    dims = tuple(range(1, student.dim()))
    scale = student.abs().mean(dims, keepdim=True).sqrt() * teacher.abs().mean(dims, keepdim=True).sqrt()
    scale = scale + GEO_L1_STABILISER
    return (student / scale - teacher / scale).abs().mean()


def pyramid_scales(height: int, width: int, min_size: int = PYRAMID_MIN_SIZE) -> int:
    """Number of scales M: kernel sizes 1, 2, 4, ... while both sides of the pooled map stay ≥ min_size
    (28×28 → 2 scales {28, 14}; 64×64 → 4 {64, 32, 16, 8}; a map of side ≤ min_size → 1)."""
    scales = 1
    while min(height, width) // 2**scales >= min_size:
        scales += 1
    return scales


def pyramid_geometric_l1(student: Tensor, teacher: Tensor, min_size: int = PYRAMID_MIN_SIZE) -> Tensor:
    """Eq. 7 of Bassi et al. (2024): the mean of ``geometric_l1`` over an average-pooling pyramid
    (non-overlapping kernels 2^k, per channel), down to maps of side ``min_size``."""
    scales = pyramid_scales(student.shape[-2], student.shape[-1], min_size)
    losses = []
    for k in range(scales):
        s, t = (student, teacher) if k == 0 else (F.avg_pool2d(student, 2**k), F.avg_pool2d(teacher, 2**k))
        losses.append(geometric_l1(s, t))
    return torch.stack(losses).mean()


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """τ² · (1/B) Σ_i KL(softmax(t_i/τ) ‖ softmax(s_i/τ)) (Hinton et al., 2015, Section 2)."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def gce(logits: Tensor, y: Tensor, q: float) -> Tensor:
    """Per-sample generalised cross-entropy (Zhang & Sabuncu 2018, Eq. 4): (1 − p_y^q) / q; its gradient is
    p_y^q times cross-entropy's, so a biased model trained on it leans on the samples it already gets right."""
    p_y = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1).clamp(min=1e-8)
    return (1 - p_y.pow(q)) / q


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Σ w v / Σ w (0 when every weight is 0)."""
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)
