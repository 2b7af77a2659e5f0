"""Registry of explanation methods (``explain(..., method=NAME)``)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.registry import Registry

EXPLAINERS: Registry[Callable[..., Any]] = Registry("explanation method")


def register_explainer(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return EXPLAINERS.register(name)


def list_explainers() -> list[str]:
    return EXPLAINERS.names()
