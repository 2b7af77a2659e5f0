"""``perf`` times each method's own training step, not a warm-up stage that precedes it."""
from __future__ import annotations

from typing import Any

import pytest
import torch

import bench.perf
from bench.data import load_dataset
from bench.method import get_method, list_methods, resolve_hparams


@pytest.fixture(scope="module")
def masked() -> Any:
    return load_dataset(bench.perf.MASKED_DATASET, {}, 0, torch.device("cpu"))


def timed_method(method: str, dataset: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    seen = {}

    def fake_time_steps(step: Any, batches: Any, device: Any, steps: int) -> tuple[float, None]:
        seen["method"] = step.__self__
        return 1.0, None

    monkeypatch.setattr(bench.perf, "time_steps", fake_time_steps)
    bench.perf.measure(method, dataset, "fast", torch.device("cpu"), steps=1, batch_size=8)
    return seen["method"]


def test_isnet_is_timed_past_its_calibration(masked: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    method = timed_method("isnet", masked, monkeypatch)
    assert not method.calibrating and float(method.cuts[0]) > 0


def test_neuron_differentiation_is_timed_in_its_mask_stage(masked: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert timed_method("neuron_diff", masked, monkeypatch).current == "masks"


@pytest.mark.parametrize("name", list_methods())
def test_perf_hparams_are_valid_hyper_parameters(name: str) -> None:
    resolve_hparams(get_method(name), "fast", get_method(name).perf_hparams)
