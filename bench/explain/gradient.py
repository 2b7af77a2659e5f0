"""Input gradients and Gradient×Input (Shrikumar et al., 2016)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bench.explain.registry import Target, register_explainer, resolve_target


def selected_logits(model: nn.Module, x: Tensor, target: Target) -> tuple[Tensor, Tensor]:
    """Forward ``x`` (made to require grad) and return (input, sum over the batch of logit[target])."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    logits = model(x)
    return x, logits.gather(1, resolve_target(logits, target).view(-1, 1)).sum()


def input_gradient(model: nn.Module, x: Tensor, target: Target, create_graph: bool) -> tuple[Tensor, Tensor]:
    x, score = selected_logits(model, x, target)
    (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
    return x, grad


@register_explainer("inputgrad")
def inputgrad(model: nn.Module, x: Tensor, target: Target, *, create_graph: bool = False, **_: Any) -> Tensor:
    """h = ∂y_k/∂x, per channel (the distillation paper's input-gradient distillation)."""
    return input_gradient(model, x, target, create_graph)[1]


@register_explainer("gradinput")
def gradinput(model: nn.Module, x: Tensor, target: Target, *, create_graph: bool = False, **_: Any) -> Tensor:
    """h = x ⊙ ∂y_k/∂x, per channel."""
    x, grad = input_gradient(model, x, target, create_graph)
    return x * grad
