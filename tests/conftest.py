"""Shared fixtures: a tiny COLOURED MNIST configuration and an isolated dataset cache."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_DATA = {"train_size": 512, "val_size": 256, "test_size": 256}
TINY_HP = {"epochs": 2, "batch_size": 64}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.getbasetemp() / "dataset-cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    torch.manual_seed(0)
    return cache
