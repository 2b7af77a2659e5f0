"""corrupted_objects proves its bias: the corruption is the class (up to the requested conflicting ratio),
the corruptions are what they claim, and a user's CIFAR-10 files can replace the sprites."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import BiasedDataset, load_dataset
from datasets.corruptions import LFF_TYPE0, brightness, contrast, corrupt, jpeg, pixelate, saturate
from tests.test_image_sources import write_layout_folders

SMALL = {"train_size": 1000, "val_size": 100, "test_size": 400}


@pytest.fixture(scope="module")
def dataset() -> BiasedDataset:
    return load_dataset("corrupted_objects", {**SMALL, "conflict_ratio": 0.02}, 0)


def test_conflicting_fraction_and_unbiased_test(dataset: BiasedDataset) -> None:
    for name in ("train", "val", "iid"):
        split = dataset.splits[name]
        assert float((split.bias != split.y).float().mean()) == pytest.approx(0.02, abs=10 / len(split)), name
    unbiased, conflicting = dataset.splits["unbiased"], dataset.splits["conflicting"]
    assert float((unbiased.bias == unbiased.y).float().mean()) == pytest.approx(0.1, abs=0.03)
    assert torch.all(conflicting.bias != conflicting.y)


def features(x: torch.Tensor) -> torch.Tensor:
    """Simple per-image statistics that corruptions change: mean, spread, saturation, edges, flat runs."""
    x = x.float() / 255
    value, low = x.amax(1), x.amin(1)
    saturation = ((value - low) / value.clamp(min=1e-3)).mean((1, 2))
    dx, dy = x[..., 1:] - x[..., :-1], x[..., 1:, :] - x[..., :-1, :]
    flat = (dx.abs().amax(1) < 1e-3).float().mean((1, 2))
    return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), saturation, dx.abs().mean((1, 2, 3)),
                        dy.abs().mean((1, 2, 3)), flat], 1)


def test_the_corruption_is_readable_from_the_image(dataset: BiasedDataset) -> None:
    """Nearest-centroid on what the corruption did to simple image statistics (fitted on train, read on val)
    names the corruption far above chance (10 %): the shortcut is in the pixels, and in training it is the
    class."""
    train, val = dataset.splits["train"], dataset.splits["val"]
    train_shift = features(train.x) - features(train.x_debiased)
    scale = train_shift.std(0)
    centroids = torch.stack([train_shift[train.bias == k].mean(0) for k in range(10)]) / scale
    val_shift = (features(val.x) - features(val.x_debiased)) / scale
    predicted = torch.cdist(val_shift, centroids).argmin(1)
    assert float((predicted == val.bias).float().mean()) > 0.6
    assert torch.equal(train.bias == train.y, train.group == 0)


def test_corruptions_do_what_they_say() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=gen) * 0.6 + 0.2
    assert torch.all(contrast(x, 5, gen).std((1, 2, 3)) < 0.2 * x.std((1, 2, 3)))
    assert torch.all(brightness(x, 5, gen).amax(1).mean((1, 2)) > x.amax(1).mean((1, 2)) + 0.2)
    sat = lambda im: ((im.amax(1) - im.amin(1)) / im.amax(1)).mean()  # noqa: E731
    assert sat(saturate(x, 5, gen)) > sat(x) + 0.2
    blocks = pixelate(x, 5, gen)  # 21 px up to 32: runs of equal neighbours
    assert float((blocks[..., 1:] == blocks[..., :-1]).float().mean()) > 0.3
    compressed = jpeg(x, 5, gen)
    assert compressed.shape == x.shape and 0 < float((compressed - x).abs().mean()) < 0.15
    for k, (name, function) in enumerate(LFF_TYPE0.items()):
        out = function(x, 5, gen)
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1, name
        assert float((out - x).abs().mean()) > 0.01, name
        assert torch.equal(corrupt(x, torch.full((4,), k), 5, torch.Generator().manual_seed(3)),
                           function(x, 5, torch.Generator().manual_seed(3))), name
    with pytest.raises(ValueError, match="level"):
        contrast(x, 6, gen)


def test_cifar10_files_replace_the_sprites(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8),
              "train_labels": np.arange(30, dtype=np.int64) % 10,
              "test_images": rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8),
              "test_labels": np.arange(10, dtype=np.int64)}
    order = np.argsort(arrays["train_labels"], kind="stable")  # class folders are read class by class
    arrays["train_images"], arrays["train_labels"] = arrays["train_images"][order], arrays["train_labels"][order]
    write_layout_folders(tmp_path, arrays)
    params = {"source": "cifar10", "root": str(tmp_path), "train_size": 25, "val_size": 5, "test_size": 10}
    ds = load_dataset("corrupted_objects", params, 0)
    train = ds.splits["train"]
    pool = {bytes(img.numpy()) for img in torch.from_numpy(arrays["train_images"])}
    assert all(bytes(img.numpy()) in pool for img in train.x_debiased)  # clean views are the user's images
    assert train.mask is None and ds.class_names[1] == "automobile"
    with pytest.raises(Exception, match="needs root"):
        load_dataset("corrupted_objects", {"source": "cifar10"}, 0)
