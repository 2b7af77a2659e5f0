"""GALS: the "suppress outside" loss on hand-built gradients, the blurred attention map, and the parameter
gradient of the whole loss against finite differences (double backward)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods.gals import attention_map, gaussian_blur, suppress_outside
from tests.conftest import assert_matches_finite_differences


def test_suppress_outside_on_hand_built_gradients() -> None:
    grad = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])
    attention = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    # |g (1 − A)| = 0, 2, 1.5, 0 → mean 0.875
    assert float(suppress_outside(grad, attention)) == pytest.approx(0.875)
    assert float(suppress_outside(grad, torch.ones_like(grad))) == 0.0  # all inside the attention


def test_attention_is_the_blurred_region_scaled_to_one() -> None:
    region = torch.zeros(1, 1, 16, 16)
    region[..., 4:12, 4:12] = 1
    assert torch.equal(attention_map(region, 0.0), region)
    soft = attention_map(region, 1 / 16)
    assert float(soft.max()) == pytest.approx(1.0) and 0 < float(soft[0, 0, 3, 8]) < 1  # softened edge
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[..., 4, 4] = 1
    torch.testing.assert_close(gaussian_blur(impulse, 1.0).sum(), torch.tensor(1.0))  # the kernel sums to one


def test_parameter_gradient_equals_finite_differences() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(2 * 16, 3)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([1, 2])
    attention = torch.rand(2, 1, 4, 4, dtype=torch.float64)

    def loss() -> torch.Tensor:
        inputs = x.clone().requires_grad_(True)
        ce = F.cross_entropy(model(inputs), y)
        (grad,) = torch.autograd.grad(ce, inputs, create_graph=True)
        return ce + 100.0 * suppress_outside(grad, attention)

    assert_matches_finite_differences(loss, list(model.parameters()))
