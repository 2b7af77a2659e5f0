"""Registry of explanation methods (``explain(..., method=NAME)``)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from bench.registry import Registry

Target = Tensor | Callable[[Tensor], Tensor]
"""Which logit to explain, per sample: class indices, or a function of the (detached) logits that returns
them, so that a caller can choose the class from the same forward pass that the explanation uses."""

EXPLAINERS: Registry[Callable[..., Any]] = Registry("explanation method")


def register_explainer(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return EXPLAINERS.register(name)


def list_explainers() -> list[str]:
    return EXPLAINERS.names()


def resolve_target(logits: Tensor, target: Target) -> Tensor:
    """Class indices (B,) for ``target`` given the model's logits from the explanation's own forward pass
    (a callable target receives the logits as they are; ``explain`` detaches them for user callables)."""
    return target(logits) if callable(target) else target
