"""LfF's and JTT's pieces on hand-built tensors: GCE's limit, the per-sample loss averages and their class-wise
normalisation, the relative-difficulty weight, and JTT's up-weighted error set."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.losses import gce
from methods._mining import LossEMA, relative_difficulty
from methods.jtt import error_set_weights


def test_gce_tends_to_cross_entropy_as_q_tends_to_zero() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    torch.testing.assert_close(gce(logits, y, 1e-7), F.cross_entropy(logits, y, reduction="none"), rtol=1e-5,
                               atol=1e-6)


def test_gce_gradient_is_p_to_the_q_times_the_cross_entropy_gradient() -> None:
    logits = torch.tensor([[1.0, -0.5, 0.2]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    (g_gce,) = torch.autograd.grad(gce(logits, y, 0.7).sum(), logits)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    p = F.softmax(logits, 1)[0, 0].detach()
    torch.testing.assert_close(g_gce, p**0.7 * g_ce)


def test_loss_averages_start_at_the_first_loss_then_move_by_one_minus_alpha() -> None:
    ema = LossEMA(torch.tensor([0, 0, 1]), num_classes=2, alpha=0.7)
    ema.update(torch.tensor([0, 2]), torch.tensor([2.0, 4.0]))
    assert ema.values.tolist() == [2.0, 0.0, 4.0]
    ema.update(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    assert ema.values.tolist() == pytest.approx([0.7 * 2.0 + 0.3 * 1.0, 3.0, 4.0])
    # divided by the largest average of the sample's class over the whole table (class 0: 3.0, class 1: 4.0)
    assert ema.normalised(torch.tensor([0, 1, 2])).tolist() == pytest.approx([1.7 / 3.0, 1.0, 1.0])


def test_relative_difficulty_weights_what_the_biased_model_fails_on() -> None:
    w = relative_difficulty(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, 0.5]))
    assert w.tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_jtt_up_weights_exactly_the_identification_models_errors() -> None:
    correct = torch.tensor([True, False, True, False])
    assert error_set_weights(correct, 50.0).tolist() == [1.0, 50.0, 1.0, 50.0]
