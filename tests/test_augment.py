"""Crop-and-flip augmentation: the crop at the padding offset without a flip is the identity, a flip mirrors
the padded crop, every spatial view of a batch gets the same crop, labels and the budget are untouched."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.augment import augment_crop_flip, crop_flip
from bench.data import Batch, Budget


def test_crop_flip_on_hand_built_offsets() -> None:
    x = torch.arange(2 * 2 * 8 * 8, dtype=torch.float32).view(2, 2, 8, 8)
    out = crop_flip(x, torch.tensor([1, 0]), torch.tensor([1, 2]), torch.tensor([False, True]))
    assert torch.equal(out[0], x[0])  # offset = padding, no flip: the image itself
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    assert torch.equal(out[1], padded[1, :, 0:8, 2:10].flip(-1))


def test_views_share_one_crop_and_labels_stay() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16)
    batch = Batch(x=x, y=torch.arange(16), x_debiased=x.clone(), mask=(x[:, :1] > 0.5).float(),
                  index=torch.arange(16), budget=Budget.of("t", frozenset({"labels", "masks", "debiased_view"}), "x"))
    out = augment_crop_flip(batch)
    assert torch.equal(out.x, out.x_debiased)
    assert torch.equal(out.mask, (out.x[:, :1] > 0.5).float())
    assert torch.equal(out.y, batch.y) and torch.equal(out.index, batch.index)
    assert not torch.equal(out.x, x)
    assert object.__getattribute__(out, "budget") is object.__getattribute__(batch, "budget")
