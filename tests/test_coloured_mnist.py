"""Invariants of the COLOURED MNIST family and of its MNIST source (CPU, a few seconds)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from bench.data import BiasedDataset, dataset_config, load_dataset
from bench.errors import UserError
from datasets.coloured_mnist import MIN_SQ_DIST, ColouredMNIST, min_sq_distance, palette
from datasets.mnist_source import IDX_FILES, load_mnist, read_idx

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SMALL = {"train_size": 3000, "val_size": 1000, "test_size": 1000}


def build(seed: int = 0, **params: object) -> BiasedDataset:
    return ColouredMNIST.build(ColouredMNIST.Config(**params), torch.device("cpu"), seed)


def image_colours(x: Tensor) -> Tensor:
    """The one flat colour of each image (N×3): the per-channel maximum over pixels."""
    return x.amax(dim=(2, 3)).long()


def strokes(x: Tensor) -> Tensor:
    """Stroke mask (N×28×28): pixels with any non-zero channel."""
    return x.amax(dim=1) > 0


@pytest.fixture(scope="module")
def mnist() -> dict[str, Tensor]:
    return load_mnist()


@pytest.fixture(scope="module")
def full() -> BiasedDataset:
    return build(seed=0)


@pytest.fixture(scope="module")
def biased80() -> BiasedDataset:
    return build(seed=0, strength=0.8, **SMALL)


def test_embedded_mnist_matches_readme(mnist: dict[str, Tensor]) -> None:
    assert mnist["train_images"].shape == (60000, 28, 28) and mnist["train_images"].dtype == torch.uint8
    assert mnist["test_images"].shape == (10000, 28, 28) and mnist["test_labels"].dtype == torch.int64
    assert torch.bincount(mnist["train_labels"]).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist["test_labels"]).tolist() == TEST_COUNTS


def test_default_splits_and_metadata(full: BiasedDataset) -> None:
    sizes = {name: len(split) for name, split in full.splits.items()}
    assert sizes == {"train": 48000, "val": 12000, "iid": 10000, "ood": 10000, "shift": 10000}
    assert full.image_shape == (3, 28, 28) and full.num_classes == 10
    assert full.class_names == [str(k) for k in range(10)] and full.teacher_view == "x"
    assert full.group_names == {0: "bias-aligned", 1: "bias-conflicting"}
    assert set(full.split_descriptions) == set(full.splits) and full.card
    for name, split in full.splits.items():
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64 and split.mask is None
        assert (split.x_debiased is not None) == (name in ("train", "val"))


def test_colour_is_label_at_strength_one(full: BiasedDataset) -> None:
    table = palette()
    for name in ("train", "val", "iid"):
        split = full.splits[name]
        expected = strokes(split.x).unsqueeze(1).to(torch.uint8) * table[split.y].to(torch.uint8)[:, :, None, None]
        assert torch.equal(split.x, expected), name  # every stroke pixel is the class colour, the rest 0
        assert torch.equal(split.bias, split.y) and not split.group.any()


def test_strokes_are_binarised_mnist_digits(full: BiasedDataset, mnist: dict[str, Tensor]) -> None:
    test_strokes = mnist["test_images"] > 127
    for name in ("iid", "ood", "shift"):  # the same test digits, in MNIST order, in every test split
        assert torch.equal(strokes(full.splits[name].x), test_strokes), name
    # train + val is a permutation of MNIST's training set: compare per-image stroke counts
    counts = torch.cat([strokes(full.splits[s].x).sum(dim=(1, 2)) for s in ("train", "val")])
    assert torch.equal(counts.sort().values, (mnist["train_images"] > 127).sum(dim=(1, 2)).sort().values)


def test_ood_colours_are_unseen(full: BiasedDataset, biased80: BiasedDataset) -> None:
    train_colours = torch.unique(image_colours(biased80.splits["train"].x), dim=0)
    assert len(train_colours) == 20  # 10 class colours + 10 unbiasing colours
    ood = full.splits["ood"]
    assert bool((min_sq_distance(image_colours(ood.x), train_colours) > MIN_SQ_DIST).all())
    assert set(ood.bias.tolist()) == set(range(20, 30)) and ood.group.all()
    ood80 = biased80.splits["ood"]
    assert bool((min_sq_distance(image_colours(ood80.x), train_colours) > MIN_SQ_DIST).all())


def test_shift_uses_another_class_colour(full: BiasedDataset) -> None:
    shift = full.splits["shift"]
    assert bool((shift.bias < 10).all()) and bool((shift.bias != shift.y).all()) and shift.group.all()
    assert torch.equal(image_colours(shift.x), palette()[shift.bias])
    assert len(torch.unique(shift.bias[shift.y == 3])) == 9  # uniform over the other nine


def test_strength_0_8_groups_match_colours(biased80: BiasedDataset) -> None:
    for name in ("train", "val", "iid"):
        split = biased80.splits[name]
        aligned = (image_colours(split.x) == palette()[split.y]).all(dim=1)
        assert torch.equal(split.group, (~aligned).long()), name
        assert torch.equal(aligned, split.bias == split.y), name
        assert bool((split.bias[~aligned] >= 10).all() and (split.bias < 20).all()), name
    assert abs((biased80.splits["train"].group == 0).float().mean().item() - 0.8) < 0.02


def test_teacher_view_is_randomly_coloured(full: BiasedDataset) -> None:
    train = full.splits["train"]
    assert train.x_debiased is not None
    assert torch.equal(strokes(train.x_debiased), strokes(train.x))  # same digit (unless a draw rounds to black)
    colours = image_colours(train.x_debiased).float()
    assert colours.std(dim=0).min() > 60  # U(0,1)*255 has std 73.6
    class_means = torch.stack([colours[train.y == k].mean(dim=0) for k in range(10)])
    assert (class_means - colours.mean(dim=0)).abs().max() < 6  # no colour-label correlation


def test_determinism_per_seed() -> None:
    first, again, other = (build(seed=s, strength=0.8, **SMALL) for s in (3, 3, 4))
    for name, split in first.splits.items():
        for field, tensor in split.tensors().items():
            assert (tensor is None) == (getattr(again.splits[name], field) is None)
            if tensor is not None:
                assert torch.equal(tensor, getattr(again.splits[name], field)), (name, field)
    assert not torch.equal(first.splits["train"].x, other.splits["train"].x)
    assert not torch.equal(first.splits["ood"].x, other.splits["ood"].x)


def test_small_sizes_are_prefixes_of_defaults(full: BiasedDataset) -> None:
    small = build(seed=0, **SMALL)
    assert torch.equal(small.splits["train"].x, full.splits["train"].x[:3000])
    assert torch.equal(small.splits["ood"].x, full.splits["ood"].x[:1000])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    cpu = build(seed=1, strength=0.8, **SMALL)
    gpu = ColouredMNIST.build(ColouredMNIST.Config(strength=0.8, **SMALL), torch.device("cuda"), 1)
    assert gpu.splits["train"].x.is_cuda
    for name, split in cpu.splits.items():
        for field, tensor in split.tensors().items():
            if tensor is not None:
                assert torch.equal(tensor, getattr(gpu.splits[name], field).cpu()), (name, field)


# --- the torchvision-format (IDX) reader -------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_mnist(root: Path, n_train: int = 20, n_test: int = 10, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % 10,
    }
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for key, name in IDX_FILES.items():
        data = idx_bytes(arrays[key], 2051 if key.endswith("images") else 2049)
        (raw / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_roundtrip(tmp_path: Path, gz: bool) -> None:
    written = write_fake_mnist(tmp_path, gz=gz)
    loaded = load_mnist("torchvision", root=str(tmp_path))
    for key, array in written.items():
        assert torch.equal(loaded[key], torch.from_numpy(array.astype(np.int64 if "labels" in key else np.uint8)))
    assert loaded["train_labels"].dtype == torch.int64


def test_coloured_mnist_from_torchvision_files(tmp_path: Path) -> None:
    written = write_fake_mnist(tmp_path)
    ds = build(seed=0, source="torchvision", root=str(tmp_path), train_size=15, val_size=5, test_size=10)
    assert torch.equal(strokes(ds.splits["iid"].x), torch.from_numpy(written["test_images"] > 127))
    with pytest.raises(UserError, match="too few"):
        build(seed=0, source="torchvision", root=str(tmp_path), train_size=20, val_size=5, test_size=10)


def test_missing_root_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="download=true"):
        load_mnist("torchvision", root=str(tmp_path / "nowhere"))


def test_corrupt_files_are_user_errors(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / IDX_FILES["train_images"]
    data = path.read_bytes()
    path.write_bytes((2049).to_bytes(4, "big") + data[4:])
    with pytest.raises(UserError, match="magic"):
        load_mnist("torchvision", root=str(tmp_path))
    path.write_bytes(data[:-100])
    with pytest.raises(UserError, match="expected"):
        read_idx(path, 2051)
    path.write_bytes(data[:6])
    with pytest.raises(UserError, match="truncated"):
        read_idx(path, 2051)
    gz_path = tmp_path / "broken.gz"
    gz_path.write_bytes(b"not gzip")
    with pytest.raises(UserError):
        read_idx(gz_path, 2051)


@pytest.mark.parametrize("params", [
    {"strength": "1.5"}, {"strength": "-0.1"}, {"strength": "abc"}, {"source": "web"},
    {"train_size": "50000"}, {"val_size": "0"}, {"test_size": "10001"}, {"colour": "red"},
    {"source": "torchvision"}, {"download": "true"},
])
def test_bad_config_is_a_user_error(params: dict[str, str]) -> None:
    with pytest.raises(UserError):
        dataset_config("coloured_mnist", params)


def test_config_from_cli_strings() -> None:
    cfg = dataset_config("coloured_mnist", {"strength": "0.8", "train_size": "100", "root": "none"})
    assert cfg.strength == 0.8 and cfg.train_size == 100 and cfg.root is None


def test_load_dataset_uses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"strength": "0.9", "train_size": "200", "val_size": "100", "test_size": "100"}
    first = load_dataset("coloured_mnist", params, seed=0, cache_dir=tmp_path)
    files = list((tmp_path / "datasets").glob("coloured_mnist-*.pt"))
    assert len(files) == 1

    def no_build(*args: object) -> BiasedDataset:
        raise AssertionError("built again instead of reading the cache")

    monkeypatch.setattr(ColouredMNIST, "build", staticmethod(no_build))
    second = load_dataset("coloured_mnist", params, seed=0, cache_dir=tmp_path)
    assert second.meta() == first.meta()
    for name, split in first.splits.items():
        for field, tensor in split.tensors().items():
            other = getattr(second.splits[name], field)
            assert (tensor is None and other is None) or torch.equal(tensor, other), (name, field)


def test_replacing_user_files_invalidates_the_cache(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    params = {"source": "torchvision", "root": str(root), "train_size": 15, "val_size": 5, "test_size": 10}
    write_fake_mnist(root)
    first = load_dataset("coloured_mnist", params, seed=0, cache_dir=tmp_path / "cache")
    shutil.rmtree(root)
    rng = np.random.default_rng(1)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for key, name in IDX_FILES.items():
        n = 20 if key.startswith("train") else 10
        array = rng.integers(0, 256, (n, 28, 28)) if key.endswith("images") else np.arange(n) % 10
        (raw / name).write_bytes(idx_bytes(array, 2051 if key.endswith("images") else 2049))
    second = load_dataset("coloured_mnist", params, seed=0, cache_dir=tmp_path / "cache")
    assert not torch.equal(first.splits["iid"].x, second.splits["iid"].x)
    assert len(list((tmp_path / "cache" / "datasets").glob("*.pt"))) == 2


def test_editing_a_generator_invalidates_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.data as data

    params = {"train_size": "64", "val_size": "32", "test_size": "32"}
    load_dataset("coloured_mnist", params, seed=0, cache_dir=tmp_path)
    monkeypatch.setattr(data, "generator_code_fingerprint", lambda: "edited")
    load_dataset("coloured_mnist", params, seed=0, cache_dir=tmp_path)
    assert len(list((tmp_path / "datasets").glob("coloured_mnist-*.pt"))) == 2
