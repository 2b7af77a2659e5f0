"""ISNet: GWRP equals the maximum at d = 0 and the mean at d = 1; the background and foreground terms on a
hand-built heatmap; the cut-offs come from the calibrated network and are kept in the state."""
from __future__ import annotations

import math

import pytest
import torch

from bench.method import build_method, get_method, resolve_hparams
from methods.isnet import background_loss, foreground_loss, gwrp


def test_gwrp_is_max_at_zero_and_mean_at_one() -> None:
    values = torch.tensor([[3.0, 1.0, 2.0, 6.0]])
    assert float(gwrp(values, 0.0)) == 6.0
    assert float(gwrp(values, 1.0)) == pytest.approx(3.0)
    weights = [1.0, 0.5, 0.25, 0.125]  # d = 0.5 on the sorted values 6, 3, 2, 1
    assert float(gwrp(values, 0.5)) == pytest.approx((6 + 1.5 + 0.5 + 0.125) / sum(weights))


def hand_built() -> tuple[torch.Tensor, torch.Tensor]:
    """One sample, one class, one channel, 2×2: foreground = the left column holding |H| = 2 and 4 (mean 3), the
    background |H| = 3 and 6."""
    heatmap = torch.tensor([[2.0, -3.0], [-4.0, 6.0]]).view(1, 1, 1, 2, 2)
    foreground = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    return heatmap, foreground


def test_background_term_on_a_hand_built_heatmap() -> None:
    heatmap, foreground = hand_built()
    # normalised background: 3/3 = 1 and 6/3 = 2 (foreground pixels 0); GWRP d = 0 → 2; 2/(2+1); −log(1 − 2/3)
    assert float(background_loss(heatmap, foreground, decay=0.0, e=1.0)) == pytest.approx(math.log(3.0), rel=1e-6)
    # d = 1: the mean over all 4 pixels of (0, 1, 0, 2) = 0.75 → 0.75/1.75 → −log(1 − 3/7)
    assert float(background_loss(heatmap, foreground, decay=1.0, e=1.0)) == pytest.approx(-math.log(4 / 7), rel=1e-6)


def test_foreground_term_is_zero_inside_the_cut_offs_and_quadratic_outside() -> None:
    heatmap, foreground = hand_built()  # F = 2 + 4 = 6
    assert float(foreground_loss(heatmap, foreground, 1.0, 25.0)) == 0.0
    assert float(foreground_loss(heatmap, foreground, 12.0, 300.0)) == pytest.approx((0.5 - 1) ** 2)
    assert float(foreground_loss(heatmap, foreground, 1.0, 3.0)) == pytest.approx((6 - 3) ** 2)


def test_cut_offs_come_from_the_calibrated_network(dataset_cache) -> None:
    from bench.data import load_dataset

    dataset = load_dataset("mnist_background", {"train_size": 64, "val_size": 32, "test_size": 32}, seed=0)
    torch.manual_seed(0)
    hp = resolve_hparams(get_method("isnet"), "fast", {"batch_size": 16, "calibration_samples": 32})
    method = build_method(get_method("isnet"), hp, dataset, "small_cnn", torch.device("cpu"), None)
    assert method.calibrating and not method.selectable()
    method.on_epoch_start(0)
    assert method.calibrating  # epoch 0 is a calibration epoch
    method.on_epoch_start(1)
    assert not method.calibrating and method.selectable()
    with torch.no_grad():
        maps = method.heatmaps(method.ctx.train.batch(torch.arange(32)).x, create_graph=False)[0]
    expected = maps.abs().sum(dim=(-1, -2, -3)).mean()
    # the stochastic logit differs between the two draws; the scale is what must agree
    assert float(method.cuts[0]) == pytest.approx(float(expected), rel=0.5)
    assert float(method.cuts[1]) == pytest.approx(25 * float(method.cuts[0]))
    method.train()
    logs = method.step(method.ctx.train.batch(torch.arange(16)))
    assert {"background", "foreground", "ce", "loss"} <= set(logs)
