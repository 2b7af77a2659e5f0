"""Shared fixtures: a tiny COLOURED MNIST configuration, an isolated dataset cache and the tiny dataset; a
finite-difference gradient check."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from bench.data import BiasedDataset, load_dataset

TINY_DATA = {"train_size": 512, "val_size": 256, "test_size": 256}
TINY_HP = {"epochs": 2, "batch_size": 64}


@pytest.fixture(scope="session")
def dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's dataset cache (also set while session- and module-scoped fixtures load datasets)."""
    cache = tmp_path_factory.getbasetemp() / "dataset-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE", str(cache))
        yield cache


@pytest.fixture(autouse=True)
def isolated_cache(dataset_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCH_CACHE", str(dataset_cache))
    torch.manual_seed(0)
    return dataset_cache


@pytest.fixture(scope="session")
def tiny_dataset(dataset_cache: Path) -> BiasedDataset:
    """COLOURED MNIST at ``TINY_DATA`` sizes, seed 0, on the CPU (shared: tests must not modify it)."""
    return load_dataset("coloured_mnist", TINY_DATA, seed=0)


def assert_matches_finite_differences(loss: Callable[[], torch.Tensor], params: list[torch.nn.Parameter],
                                      step: float = 1e-6, samples: int = 5) -> None:
    """Autograd's gradient of ``loss()`` (float64) equals central differences on about ``samples`` entries of
    each parameter tensor."""
    grads = torch.autograd.grad(loss(), params)
    for param, grad in zip(params, grads, strict=True):
        flat = param.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // samples)):
            old = flat[i].item()
            flat[i] = old + step
            up = loss().item()
            flat[i] = old - step
            down = loss().item()
            flat[i] = old
            assert grad.reshape(-1)[i].item() == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-8)
