"""Registries: every kind lists its names and rejects unknown ones with one line naming the valid ones."""
from __future__ import annotations

import pytest

from bench.data import DATASETS
from bench.errors import UserError
from bench.method import METHODS
from bench.models import MODELS
from bench.protocols import PROTOCOLS
from bench.registry import Registry
from bench.suites import SUITES


@pytest.mark.parametrize("registry", [METHODS, DATASETS, MODELS, SUITES, PROTOCOLS], ids=lambda r: r.kind)
def test_unknown_name_lists_valid_names(registry: Registry) -> None:
    names = registry.names()
    assert names, f"no {registry.kind} registered"
    with pytest.raises(UserError) as err:
        registry.get("no-such-thing")
    message = str(err.value)
    assert "\n" not in message
    assert f"unknown {registry.kind} 'no-such-thing'" in message
    assert all(name in message for name in names)


def test_expected_entries_are_registered() -> None:
    assert {"erm", "kd", "output_distill", "teacher"} <= set(METHODS.names())
    assert "coloured_mnist" in DATASETS.names()
    assert {"resnet18", "resnet34", "resnet18_small", "small_cnn"} <= set(MODELS.names())
    assert {"quick", "paper-cmnist-baselines"} <= set(SUITES.names())
    assert {"paper", "fast"} <= set(PROTOCOLS.names())


def test_double_registration_is_an_error() -> None:
    registry: Registry[object] = Registry("widget")
    registry.register("a")(object())
    with pytest.raises(ValueError):
        registry.register("a")(object())


def test_every_method_declares_a_documented_budget() -> None:
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert cls.__doc__ and len(cls.__doc__) > 40, f"{name} needs a docstring citing its paper"
        assert cls.requires, f"{name} must declare its supervision budget"
