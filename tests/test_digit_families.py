"""The MNIST-based shortcut families prove the bias they claim: cmnist_lff, mnist_sc, mnist_background."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.data import BiasedDataset, load_dataset
from datasets.bias import block_bias
from datasets.cmnist_lff import LFF_PALETTE, PAPER_RATIOS
from datasets.digits import NO_SHORTCUT, STROKE_THRESHOLD
from datasets.mnist_background import NUM_CLASSES

SIZES = {"train_size": 6000, "val_size": 1000, "test_size": 2000}


def build(name: str, seed: int = 0, **params: object) -> BiasedDataset:
    return load_dataset(name, {**SIZES, **params}, seed)


# --- the LfF block rule --------------------------------------------------------------------------
def test_block_bias_matches_a_hand_computed_assignment() -> None:
    y = torch.tensor([0] * 10 + [1] * 10)
    bias = block_bias(y, 3, aligned_fraction=0.6)
    # class 0: milestones round(10·[0.6, 0.8, 1.0]) = [6, 8, 10] → six 0s, two 1s, two 2s
    assert bias[:10].tolist() == [0] * 6 + [1] * 2 + [2] * 2
    # class 1: ratios [0.2, 0.6, 0.2] → milestones [2, 8, 10]
    assert bias[10:].tolist() == [0] * 2 + [1] * 6 + [2] * 2


@pytest.mark.parametrize("ratio", PAPER_RATIOS)
def test_cmnist_lff_conflicting_fraction_equals_the_ratio(ratio: float) -> None:
    ds = build("cmnist_lff", conflict_ratio=ratio)
    for split in ("train", "val", "iid"):
        s = ds.splits[split]
        measured = float((s.bias != s.y).float().mean())
        assert measured == pytest.approx(ratio, abs=10 / len(s)), split  # rounding: one sample per class
        assert torch.equal(s.group, (s.bias != s.y).long())


def test_cmnist_lff_colour_is_the_palette_colour_on_the_digit() -> None:
    ds = build("cmnist_lff", conflict_ratio=0.05)
    split = ds.splits["train"]
    x, bias = split.x.float(), split.bias
    grey = x.max(dim=1).values  # the brightest channel carries the grey level times its colour
    assert torch.all((grey == 0) == (x.sum(1) == 0))  # background exactly black where the digit is
    bright = x.amax(dim=(2, 3)) / 255  # ≈ the image's colour (strokes reach grey 255)
    palette = torch.tensor(LFF_PALETTE)
    nearest = torch.cdist(bright, palette).argmin(1)
    assert float((nearest == bias).float().mean()) > 0.99


def test_cmnist_lff_unbiased_test_is_uniform_and_conflicting_is_its_subset() -> None:
    ds = build("cmnist_lff", conflict_ratio=0.01)
    unbiased, conflicting = ds.splits["unbiased"], ds.splits["conflicting"]
    counts = torch.bincount(unbiased.bias * 10 + unbiased.y, minlength=100).view(10, 10)
    # each (colour, class) cell holds ~1/10 of the class: colour independent of the digit
    share = counts / counts.sum(0, keepdim=True)
    assert torch.allclose(share, torch.full_like(share, 0.1), atol=0.02)
    assert torch.all(conflicting.bias != conflicting.y)
    assert len(conflicting) == int((unbiased.bias != unbiased.y).sum())


# --- MNIST-SC ------------------------------------------------------------------------------------
def test_mnist_sc_patch_position_is_the_label_in_training() -> None:
    ds = build("mnist_sc", strength=1.0)
    train = ds.splits["train"]
    assert torch.equal(train.bias, train.y)
    # every class's patch is at its own place: the mask of class k is the same for all its images
    for k in range(10):
        masks = train.mask[train.y == k]
        assert torch.all(masks == masks[0])
    assert len({tuple(train.mask[train.y == k][0].nonzero().flatten().tolist()) for k in range(10)}) == 10


def test_mnist_sc_mask_covers_exactly_the_stamped_pixels() -> None:
    ds = build("mnist_sc")
    for name in ("train", "val"):
        split = ds.splits[name]
        changed = (split.x != split.x_debiased).any(1, keepdim=True)
        assert torch.all(split.x[split.mask.expand_as(split.x)] == 255)
        assert torch.all(changed <= split.mask)  # nothing changed outside the patch
        # inside the patch every pixel was changed unless the digit was already white there
        already_white = (split.x_debiased == 255).all(1, keepdim=True)
        assert torch.all(split.mask <= (changed | already_white))


def test_mnist_sc_test_splits() -> None:
    ds = build("mnist_sc", strength=0.9)
    iid, shift, ood = ds.splits["iid"], ds.splits["shift"], ds.splits["ood"]
    assert float((iid.bias == iid.y).float().mean()) == pytest.approx(0.9, abs=0.03)
    assert torch.all(shift.bias != shift.y) and torch.all(shift.group == 1)
    assert torch.all(ood.bias == NO_SHORTCUT) and not ood.mask.any() and torch.all(ood.group == 2)
    assert torch.equal(iid.y, shift.y) and torch.equal(iid.y, ood.y)  # the same digits


# --- MNIST with background stripes --------------------------------------------------------------
def stripe_angles(x: torch.Tensor, digits_free: torch.Tensor) -> torch.Tensor:
    """Dominant gradient orientation (mod π) of each image over ``digits_free`` pixels (structure tensor)."""
    image = x[:, :1].float()
    gx = F.conv2d(image, torch.tensor([[[[-0.5, 0.0, 0.5]]]]), padding=(0, 1))
    gy = F.conv2d(image, torch.tensor([[[[-0.5], [0.0], [0.5]]]]), padding=(1, 0))
    weight = digits_free.float()
    jxx, jyy, jxy = ((weight * g).sum((1, 2, 3)) for g in (gx * gx, gy * gy, gx * gy))
    return (0.5 * torch.atan2(2 * jxy, jxx - jyy)) % math.pi


def background_only(split) -> torch.Tensor:
    """Pixels at least 2 px away from any digit pixel and from the image border."""
    near_digit = F.max_pool2d((split.x_debiased if split.x_debiased is not None else split.x)[:, :1].float()
                              .mul(0) + split.mask.float(), 5, stride=1, padding=2) > 0
    free = ~near_digit
    free[..., :2, :] = free[..., -2:, :] = free[..., :, :2] = free[..., :, -2:] = False
    return free


def test_mnist_background_stripe_orientation_encodes_the_label() -> None:
    ds = build("mnist_background", strength=1.0)
    for name in ("train", "shift"):
        split = ds.splits[name]
        angles = stripe_angles(split.x, background_only(split))
        # classes are 18° apart; finite differences bias the estimate by a few degrees at a 5 px period
        nearest_class = torch.round(angles / (math.pi / NUM_CLASSES)).long() % NUM_CLASSES
        assert torch.equal(nearest_class, split.bias), name
    assert torch.equal(ds.splits["train"].bias, ds.splits["train"].y)
    assert torch.all(ds.splits["shift"].bias != ds.splits["shift"].y)


def test_mnist_background_mask_is_the_digit_and_ood_has_no_pattern() -> None:
    ds = build("mnist_background")
    ood = ds.splits["ood"]
    grey = ood.x[:, 0]
    assert torch.equal(ood.mask[:, 0], grey > STROKE_THRESHOLD)  # no pattern: the plain digit
    iid = ds.splits["iid"]  # the same digits as ood, with stripes
    full = grey == 255  # fully opaque digit pixels hide the background
    assert torch.equal(iid.x[:, 0][full], grey[full])
    assert torch.equal(iid.mask, ood.mask)
    assert float((iid.x[:, 0][~iid.mask[:, 0]] > 0).float().mean()) > 0.5  # the background is patterned


def test_fashion_mnist_files_replace_the_digits(tmp_path) -> None:
    from tests.test_image_sources import write_fashion

    arrays = write_fashion(tmp_path)
    n_train, n_test = len(arrays["train_labels"]), len(arrays["test_labels"])
    params = {"source": "fashion_mnist", "root": str(tmp_path), "train_size": n_train - 2, "val_size": 2,
              "test_size": n_test}
    ds = load_dataset("mnist_sc", params, 0)
    assert ds.class_names[0] == "T-shirt/top"
    ood = ds.splits["ood"]  # no patch: the user's images as they are
    assert torch.equal(ood.x[:, 0], torch.from_numpy(arrays["test_images"]))
    with pytest.raises(Exception, match="needs root"):
        load_dataset("mnist_sc", {"source": "fashion_mnist"}, 0)
