"""RRR: the penalty on hand-built models (zero when the input gradient lies inside the relevant region), its
parameter gradient against finite differences (the double backward is exact), and the region a mask gives."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import UserError
from bench.method import relevant_region
from methods.rrr import log_prob_input_gradient, rrr_penalty
from tests.conftest import assert_matches_finite_differences


def region() -> torch.Tensor:
    relevant = torch.zeros(2, 1, 4, 4)
    relevant[:, :, 1:3, 1:3] = 1
    return relevant


def test_penalty_is_zero_when_the_gradient_lies_inside_the_region() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    x = torch.rand(2, 2, 4, 4, requires_grad=True)
    irrelevant = 1 - region()
    inside = irrelevant.expand(2, 2, 4, 4)[0].flatten() == 0
    with torch.no_grad():
        model[1].weight[:, ~inside] = 0  # the logits read only the relevant pixels
    grad = log_prob_input_gradient(model(x), x)
    assert torch.equal(rrr_penalty(grad, irrelevant), torch.zeros(2))
    with torch.no_grad():
        model[1].weight[:, ~inside] = 0.1
    grad = log_prob_input_gradient(model(x), x)
    penalty = rrr_penalty(grad, irrelevant)
    torch.testing.assert_close(penalty, (grad * irrelevant).pow(2).sum(dim=(1, 2, 3)))
    assert bool((penalty > 0).all())


def test_parameter_gradient_equals_finite_differences() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(3 * 16, 3)).double()
    x = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 2])
    irrelevant = (1 - region()).double()

    def loss() -> torch.Tensor:
        inputs = x.clone().requires_grad_(True)
        logits = model(inputs)
        penalty = rrr_penalty(log_prob_input_gradient(logits, inputs), irrelevant).mean()
        return F.cross_entropy(logits, y) + 3.0 * penalty

    assert_matches_finite_differences(loss, list(model.parameters()))


def test_the_relevant_region_follows_what_the_mask_outlines() -> None:
    mask = torch.tensor([[[[True, False]]]])
    assert relevant_region(mask, "outside_mask").tolist() == [[[[1.0, 0.0]]]]  # the mask is the object
    assert relevant_region(mask, "mask").tolist() == [[[[0.0, 1.0]]]]  # the mask is the shortcut
    with pytest.raises(UserError, match="masks that locate the shortcut"):
        relevant_region(mask, "")
