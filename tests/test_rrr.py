"""RRR: the penalty on hand-built models (zero when the input gradient lies inside the relevant region), its
parameter gradient against finite differences (the double backward is exact), and the region a mask gives."""
from __future__ import annotations

import copy

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


def _rrr(statistics: str):
    from bench.data import load_dataset
    from bench.method import build_method, get_method, resolve_hparams

    dataset = load_dataset("mnist_background", {"train_size": 64, "val_size": 32, "test_size": 32}, seed=0)
    torch.manual_seed(0)
    hp = resolve_hparams(get_method("rrr"), "fast", {"batch_size": 16, "penalty_statistics": statistics})
    method = build_method(get_method("rrr"), hp, dataset, "small_cnn", torch.device("cpu"), None)
    for module in method.model.modules():  # running statistics unlike any batch's, so the modes differ
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(0.3)
            module.running_var.fill_(2.0)
    method.train()
    return method


def _penalties(method, batch, logits_of) -> torch.Tensor:
    x = batch.x.clone().requires_grad_(True)
    return rrr_penalty(log_prob_input_gradient(logits_of(x), x, False), 1.0 - method.region(batch))


def test_with_running_statistics_each_images_penalty_is_its_own(dataset_cache) -> None:
    """``penalty_statistics="running"``: an image's penalty does not depend on the rest of its batch and is the
    penalty of the network in inference mode (an independent eval-mode copy); no running statistic moves. With
    the batch's statistics (the authors' code) an image's penalty depends on its batch."""
    method = _rrr("running")
    batch, single = method.ctx.train.batch(torch.arange(16)), method.ctx.train.batch(torch.arange(1))
    state = copy.deepcopy(method.model.state_dict())
    in_batch = _penalties(method, batch, method.inference_logits)
    alone = _penalties(method, single, method.inference_logits)
    torch.testing.assert_close(in_batch[:1], alone, rtol=1e-5, atol=1e-9)
    frozen = copy.deepcopy(method.model).eval()
    torch.testing.assert_close(in_batch, _penalties(method, batch, frozen), rtol=1e-5, atol=1e-9)
    assert all(torch.equal(v, state[k]) for k, v in method.model.state_dict().items())
    assert method.model.training  # the mode is restored
    torch.testing.assert_close(method.losses(batch, create_graph=False)["penalty"], in_batch.mean())

    coupled = _rrr("batch")
    in_batch = _penalties(coupled, batch, coupled.model)
    alone = _penalties(coupled, single, coupled.model)
    assert float(in_batch[0]) != pytest.approx(float(alone[0]), rel=1e-3)
