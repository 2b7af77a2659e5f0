"""Feature-level explanations: Grad-CAM (Selvaraju et al., 2017) and attention maps (Zagoruyko &
Komodakis, 2017), at a chosen layer (default: the model's ``feature_layer``)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.explain.registry import Target, register_explainer, resolve_target


def resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module:
    """``layer`` as a module of ``model`` (a module, its dotted name, or None for ``model.feature_layer``)."""
    if layer is None:
        layer = getattr(model, "feature_layer", None)
        if layer is None:
            raise ValueError("this model names no feature_layer; pass layer= (a module or its name)")
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"model has no layer {layer!r}") from None
    if not any(layer is m for m in model.modules()):
        raise ValueError("layer is not a module of this model")
    return layer


def layer_output(model: nn.Module, x: Tensor, layer: nn.Module) -> tuple[Tensor, Tensor]:
    """(logits, activation of ``layer``) from one forward pass (the input made to require grad, so that the
    activation has a graph even when the model's parameters are frozen)."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, captured[-1]


@register_explainer("gradcam")
def gradcam(model: nn.Module, x: Tensor, target: Target, *, create_graph: bool = False,
            layer: nn.Module | str | None = None, **_: Any) -> Tensor:
    """ReLU(Σ_c α_c A_c) with α_c = spatial mean of ∂y_k/∂A_c; B×1×h×w. The gradient is taken with
    ``create_graph`` so that the map itself trains (e²KD; the distillation paper's Grad-CAM distillation)."""
    logits, activation = layer_output(model, x, resolve_layer(model, layer))
    score = logits.gather(1, resolve_target(logits, target).view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, activation, create_graph=create_graph, retain_graph=True)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(dim=1, keepdim=True))


@register_explainer("attention")
def attention(model: nn.Module, x: Tensor, target: Target, *, layer: nn.Module | str | None = None,
              **_: Any) -> Tensor:
    """Σ_c A_c² at ``layer`` (B×1×h×w); class-independent (``target`` is only resolved, so that a callable
    target still sees the logits)."""
    logits, activation = layer_output(model, x, resolve_layer(model, layer))
    resolve_target(logits, target)
    return activation.pow(2).sum(dim=1, keepdim=True)


def upsample(heatmap: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of a B×1×h×w map to the spatial size of ``like`` (e.g. the input)."""
    return F.interpolate(heatmap, size=like.shape[-2:], mode="bilinear", align_corners=False)
