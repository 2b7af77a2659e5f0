"""Registry-driven tests: every registered method trains a few steps on tiny data, its losses are finite and
its parameters move; plus hand-computed values of the distillation losses. The state and resume contract
of every method is in ``test_contract.py``."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.losses import soft_kl
from bench.method import build_method, get_method, list_methods, resolve_hparams
from bench.models import create_model


def _build(name: str, dataset, **hp):
    cls = get_method(name)
    hparams = resolve_hparams(cls, "fast", {"batch_size": 32, **hp})
    teacher = None
    if "teacher" in cls.requires:
        teacher = create_model("small_cnn", dataset.num_classes).eval().requires_grad_(False)
    return build_method(cls, hparams, dataset, "small_cnn", torch.device("cpu"), teacher)


@pytest.fixture(scope="module")
def tiny_masked(dataset_cache):
    """MNIST with background bias at ``TINY_DATA`` sizes: masks for the mask-guided methods."""
    from bench.data import load_dataset
    from tests.conftest import TINY_DATA

    return load_dataset("mnist_background", TINY_DATA, seed=0)


@pytest.mark.parametrize("name", list_methods())
def test_method_trains_a_few_steps(name: str, tiny_dataset, tiny_masked) -> None:
    if "masks" in get_method(name).requires:
        tiny_dataset = tiny_masked
    torch.manual_seed(0)
    method = _build(name, tiny_dataset)
    before = [p.detach().clone() for p in method.trainable()]
    split = tiny_dataset.splits["train"]
    method.train()
    for i in range(3):
        logs = method.step(split.batch(torch.arange(32 * i, 32 * (i + 1)), method.train_views, method.ctx.budget))
        assert logs and all(v.dim() == 0 and math.isfinite(float(v)) for v in logs.values()), logs
    moved = [not torch.equal(b, p) for b, p in zip(before, method.trainable(), strict=True)]
    # a gradient explanation does not depend on a bias that only switches the last ReLUs (its gradient is
    # exactly 0), so a few tensors may legitimately stay put; nearly all must move
    assert sum(moved) >= 0.8 * len(moved), f"{len(moved) - sum(moved)} parameter tensors of {name} did not move"
    method.eval()
    with torch.no_grad():
        val = split.batch(torch.arange(0, 16), method.train_views, method.ctx.budget)
        assert method.predict(split.batch(torch.arange(0, 16)).x).shape == (16, tiny_dataset.num_classes)
        assert math.isfinite(float(method.val_loss(val)))


def test_soft_kl_golden_value() -> None:
    """τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) for a hand-computed 2-class case."""
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[3.0, 0.0]])
    tau = 3.0
    p = torch.softmax(teacher / tau, 1)[0]  # [e/(e+1), 1/(e+1)]
    expected = tau**2 * float((p * (p / 0.5).log()).sum())
    assert float(soft_kl(student, teacher, tau)) == pytest.approx(expected, rel=1e-6)
    # 9 · (0.731 · ln 1.462 + 0.269 · ln 0.538), by hand
    assert float(soft_kl(student, teacher, tau)) == pytest.approx(0.99849695, rel=1e-6)
    assert float(soft_kl(teacher, teacher, tau)) == pytest.approx(0.0, abs=1e-7)


def test_kd_with_labels_mixes_ce(tiny_dataset) -> None:
    method = _build("kd", tiny_dataset, label_weight=0.25)
    batch = tiny_dataset.splits["train"].batch(torch.arange(8), method.train_views)
    with torch.no_grad():
        logits = method.model(batch.x)
        teacher_logits = method.teacher(batch.x)
        expected = 0.75 * soft_kl(logits, teacher_logits, 3.0) + 0.25 * F.cross_entropy(logits, batch.y)
        assert float(method.objective(batch, logits)) == pytest.approx(float(expected), rel=1e-6)


def test_kd_paper_protocol_defaults() -> None:
    hp = resolve_hparams(get_method("output_distill"), "paper")
    assert (hp.temperature, hp.label_weight, hp.lr, hp.momentum, hp.epochs, hp.batch_size, hp.grad_clip) == \
        (3.0, 0.0, 1e-2, 0.99, 100, 128, 1.0)
    teacher = resolve_hparams(get_method("teacher"), "paper")
    assert (teacher.epochs, teacher.lr, teacher.momentum, teacher.weight_decay) == (200, 1e-3, 0.9, 1e-3)


def test_kd_defaults_and_validation() -> None:
    from bench.errors import UserError

    assert resolve_hparams(get_method("kd"), "paper").label_weight == 0.5
    with pytest.raises(UserError, match="label_weight must be > 0"):
        resolve_hparams(get_method("kd"), "paper", {"label_weight": 0})
