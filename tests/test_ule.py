"""ULE: the teacher's loss is CE + λ·MSE(∂o_t/∂x, −∂o_s/∂x) computed independently; the student gets no
gradient from the unlearning term; the unlearning term does train the teacher (double backward)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.method import build_method, get_method, resolve_hparams


def build(dataset, **hp):
    torch.manual_seed(0)
    hparams = resolve_hparams(get_method("ule"), "fast", {"batch_size": 16, **hp})
    return build_method(get_method("ule"), hparams, dataset, "small_cnn", torch.device("cpu"), None)


def test_losses_match_an_independent_computation(tiny_dataset) -> None:
    method = build(tiny_dataset, unlearning_weight=3.0, same_init=False)
    batch = tiny_dataset.splits["train"].batch(torch.arange(16))
    method.train()
    logs = method.losses(batch, create_graph=True)
    x = batch.x.clone().requires_grad_(True)
    student_logits = method.student(x)
    g_s = torch.autograd.grad(student_logits[torch.arange(16), batch.y].sum(), x)[0]
    x2 = batch.x.clone().requires_grad_(True)
    teacher_logits = method.model(x2)
    g_t = torch.autograd.grad(teacher_logits[torch.arange(16), batch.y].sum(), x2, create_graph=True)[0]
    expected = F.cross_entropy(teacher_logits, batch.y) + 3.0 * ((g_t + g_s) ** 2).mean()
    torch.testing.assert_close(logs["teacher_loss"], expected)
    torch.testing.assert_close(logs["student_loss"], F.cross_entropy(student_logits, batch.y))
    # the unlearning term: gradients for the teacher (through its saliency), none for the student
    teacher_grads = torch.autograd.grad(logs["unlearning_loss"], method.teacher_params, retain_graph=True,
                                        allow_unused=True)
    assert sum(float(g.abs().sum()) for g in teacher_grads if g is not None) > 0
    student_grads = torch.autograd.grad(logs["unlearning_loss"], method.student_params, allow_unused=True)
    assert all(g is None or float(g.abs().sum()) == 0 for g in student_grads)


def test_student_trains_like_erm(tiny_dataset) -> None:
    """The student's update is the plain CE update whatever λ is."""
    batch = tiny_dataset.splits["train"].batch(torch.arange(16))
    updated = []
    for weight in (0.0, 50.0):
        method = build(tiny_dataset, unlearning_weight=weight)
        method.train()
        method.step(batch)
        updated.append([p.detach().clone() for p in method.student_params])
    for a, b in zip(*updated, strict=True):
        torch.testing.assert_close(a, b)


def test_options(tiny_dataset) -> None:
    method = build(tiny_dataset)
    for a, b in zip(method.model.parameters(), method.student.parameters(), strict=True):
        assert torch.equal(a, b) and a is not b  # same initial weights, separate networks
    batch = tiny_dataset.splits["train"].batch(torch.arange(16))
    for output in ("predicted_logit", "loss"):
        logs = build(tiny_dataset, saliency_output=output, normalise="l2").losses(batch, create_graph=False)
        assert torch.isfinite(logs["teacher_loss"])
    with pytest.raises(Exception, match="saliency_output"):
        resolve_hparams(get_method("ule"), "fast", {"saliency_output": "probability"})


def test_teacher_loss_regression_snapshot(tiny_dataset) -> None:
    """A regression snapshot, not an independent value: the teacher's loss this implementation gave on a fixed
    batch when ``test_losses_match_an_independent_computation`` passed. It catches silent changes only."""
    method = build(tiny_dataset)
    method.eval()
    logs = method.losses(tiny_dataset.splits["val"].batch(torch.arange(16)), create_graph=False)
    assert float(logs["teacher_loss"].detach()) == pytest.approx(2.3045406341552734, rel=1e-4)
