"""GAIN: the soft mask, the attention-mining and external losses on hand-built tensors, the map's scaling,
and the method's total loss on a real batch."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from bench.method import build_method, get_method, resolve_hparams
from methods.gain import attention_mining_loss, external_loss, normalised_cam, soft_mask


def test_soft_mask_is_a_shifted_scaled_sigmoid() -> None:
    mask = soft_mask(torch.tensor([0.0, 0.5, 1.0]), omega=10.0, sigma=0.5)
    expected = [1 / (1 + math.exp(5)), 0.5, 1 / (1 + math.exp(-5))]
    assert mask.tolist() == pytest.approx(expected)


def test_mining_and_external_losses_on_hand_built_tensors() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = (1/2, 1/2) and (3/4, 1/4)
    assert float(attention_mining_loss(logits, torch.tensor([1, 0]))) == pytest.approx((0.5 + 0.75) / 2)
    attention = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    region = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert float(external_loss(attention, region)) == pytest.approx((0 + 1 + 0.25 + 0.25) / 4)


def test_the_map_is_resized_and_scaled_per_sample() -> None:
    cam = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    out = normalised_cam(cam, torch.zeros(2, 3, 4, 4))
    assert out.shape == (2, 1, 4, 4)
    assert float(out[0].max()) == pytest.approx(1.0) and float(out[0, 0, 0, 0]) == pytest.approx(1.0)
    assert torch.equal(out[1], torch.zeros(1, 4, 4))  # an all-zero map stays zero (no division by zero)


def test_the_total_loss_is_ce_plus_weighted_terms(dataset_cache) -> None:
    from bench.data import load_dataset

    dataset = load_dataset("mnist_background", {"train_size": 64, "val_size": 32, "test_size": 32}, seed=0)
    torch.manual_seed(0)
    hp = resolve_hparams(get_method("gain"), "fast", {"batch_size": 16, "mining_weight": 1.0, "external_weight": 0.0})
    method = build_method(get_method("gain"), hp, dataset, "small_cnn", torch.device("cpu"), None)
    batch = method.ctx.train.batch(torch.arange(16))
    method.train()
    logs = method.losses(batch, create_graph=True)
    assert all(torch.isfinite(v) for v in logs.values())
    torch.testing.assert_close(logs["loss"], logs["ce"] + logs["mining"])
    first_conv = next(p for p in method.model.parameters() if p.dim() == 4)
    (grad,) = torch.autograd.grad(logs["mining"], first_conv, retain_graph=True)
    assert float(grad.abs().sum()) > 0


@pytest.mark.parametrize("authors", [False, True])
def test_the_erased_images_leave_the_running_statistics_alone_unless_asked(dataset_cache, authors: bool) -> None:
    """By default the running statistics after a GAIN loss are those of a forward on the clean batch alone;
    with ``mining_updates_running_stats`` (the authors' code) the erased images' forward moves them too."""
    from bench.data import load_dataset

    dataset = load_dataset("mnist_background", {"train_size": 64, "val_size": 32, "test_size": 32}, seed=0)
    torch.manual_seed(0)
    hp = resolve_hparams(get_method("gain"), "fast", {"batch_size": 16, "mining_updates_running_stats": authors})
    method = build_method(get_method("gain"), hp, dataset, "small_cnn", torch.device("cpu"), None)
    batch = method.ctx.train.batch(torch.arange(16))
    method.train()
    clean = copy.deepcopy(method.model)
    clean(batch.x)
    method.losses(batch, create_graph=True)
    norms = [(a, b) for a, b in zip(method.model.modules(), clean.modules(), strict=True)
             if isinstance(a, torch.nn.BatchNorm2d)]
    same = all(torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
               and torch.equal(a.num_batches_tracked, b.num_batches_tracked) for a, b in norms)
    assert norms and same is not authors
    assert all(a.momentum == b.momentum for a, b in norms)  # the context restores the momentum
