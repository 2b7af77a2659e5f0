"""GALS: the "suppress outside" loss on hand-built gradients, the blurred attention map, and the parameter
gradient of the whole loss against finite differences (double backward)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods._guided import rolled
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


def test_gals_teacher_attention_is_the_teachers_label_grad_cam(tiny_dataset) -> None:  # noqa: ANN001
    from bench.explain.cam import upsample
    from bench.method import build_method, get_method, resolve_hparams
    from bench.models import create_model
    from tests.test_e2kd import gradcam_by_hand

    torch.manual_seed(0)
    teacher = create_model("small_cnn", tiny_dataset.num_classes).eval().requires_grad_(False)
    split = tiny_dataset.splits["train"]
    batch = split.batch(torch.arange(8), ("x",))

    def built(control: str):  # noqa: ANN202
        hp = resolve_hparams(get_method("gals_teacher"), "fast", {"batch_size": 8, "mask_control": control})
        return build_method(get_method("gals_teacher"), hp, tiny_dataset, "small_cnn", torch.device("cpu"), teacher)

    method = built("none")
    assert method.requires == frozenset({"labels", "teacher"})
    cam, _ = gradcam_by_hand(teacher, batch.x.clone().requires_grad_(True), batch.y)  # frozen: grads via x
    expected = upsample(cam, batch.x)
    expected = expected / expected.flatten(1).amax(1).clamp(min=1e-8)[:, None, None, None]
    attention = method.attention(batch)
    torch.testing.assert_close(attention, expected.detach())
    assert attention.shape == (8, 1, *batch.x.shape[-2:]) and float(attention.max()) <= 1.0
    torch.testing.assert_close(built("random").attention(batch), rolled(expected.detach(), batch.index))
    assert float(method.losses(batch, create_graph=False)["penalty"]) >= 0
