"""The random-mask control of the mask-guided methods: the same area and shape, placed by a fixed per-sample
offset (the same every epoch), elsewhere than the real region."""
from __future__ import annotations

import pytest
import torch

from bench.errors import UserError
from bench.method import get_method, resolve_hparams
from methods._guided import MASK_CONTROLS, rolled

GUIDED = ["gain", "gals", "isnet", "rrr"]


def test_rolled_regions_keep_shape_and_area_and_depend_only_on_the_index() -> None:
    region = torch.zeros(4, 1, 8, 8)
    region[:, :, 1:4, 2:6] = 1
    index = torch.tensor([0, 1, 2, 3])
    moved = rolled(region, index)
    assert moved.shape == region.shape
    assert torch.equal(moved.sum(dim=(1, 2, 3)), region.sum(dim=(1, 2, 3)))  # same area
    assert torch.equal(rolled(region, index), moved)  # fixed: the same every epoch
    assert torch.equal(rolled(region[2:3], index[2:3]), moved[2:3])  # a sample's offset is its own
    assert sum(not torch.equal(moved[i], region[i]) for i in range(4)) >= 3  # placed elsewhere
    dy, dx = (1 * 7919 + 13) % 8, (1 * 104729 + 7) % 8
    assert torch.equal(moved[1], torch.roll(region[1], shifts=(dy, dx), dims=(1, 2)))  # a cyclic shift


@pytest.mark.parametrize("name", GUIDED)
def test_every_mask_guided_method_has_the_control(name: str) -> None:
    assert resolve_hparams(get_method(name), "fast", {"mask_control": "random"}).mask_control == "random"
    assert "masks" in get_method(name).requires
    with pytest.raises(UserError, match="mask_control must be one of none, random"):
        resolve_hparams(get_method(name), "fast", {"mask_control": "shuffled"})
    assert MASK_CONTROLS == ("none", "random")
