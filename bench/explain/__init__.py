"""Differentiable explanations: LRP-ε, LRP-Flex, Gradient×Input, input gradients, Grad-CAM, attention.

Every map is built from ordinary differentiable torch operations (vector-Jacobian products taken with
``torch.autograd.grad`` and elementwise rescalings), never from modified backward hooks, so with
``create_graph=True`` the parameter gradients of any loss on the map are exact (double backward).
Nothing here synchronises with the host. The engine imports no model: model code declares its containers'
structure for LRP with ``lrp_chain``, ``lrp_residual``, ``lrp_concat`` or ``register_lrp_structure``
(``bench.explain.structure``); torch, torchvision and timm ResNets/VGGs are declared in
``bench.explain.library_models`` and are explained as they are.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bench.explain import bcos, cam, gradient, library_models, lrp  # noqa: F401  (registration)
from bench.explain.registry import EXPLAINERS, Target, list_explainers, register_explainer
from bench.explain.structure import lrp_chain, lrp_concat, lrp_residual, register_lrp_structure

__all__ = ["EXPLAINERS", "Target", "explain", "explain_with_logits", "list_explainers", "lrp_chain", "lrp_concat",
           "lrp_residual", "register_explainer", "register_lrp_structure"]


def explain(model: nn.Module, x: Tensor, target: Target, method: str, *, create_graph: bool = False,
            eps: float | Tensor | None = None, layer: nn.Module | str | None = None) -> Tensor:
    """Explanation of logit ``target[i]`` of ``model`` for each sample ``x[i]``.

    ``target``: class indices of shape (B,), or a function from the (detached) logits to them.

    ``method``: ``lrp`` (LRP-ε on every conv/linear, batch norm merged into the preceding conv),
    ``lrp_flex`` (ε at ReLU positions, last layer LRP-0), ``gradinput``, ``inputgrad``, ``gradcam``,
    ``attention``. ``eps``: a scalar or a per-sample tensor (LRP only). ``layer``: a module of the model
    or its name (Grad-CAM/attention; default ``model.feature_layer``). Input-level maps are B×C×H×W;
    Grad-CAM and attention maps are B×1×h×w at ``layer``. With ``create_graph=True`` the map is
    differentiable with respect to the model's parameters; otherwise it is returned detached.
    """
    return explain_with_logits(model, x, target, method, create_graph=create_graph, eps=eps, layer=layer)[0]


def explain_with_logits(model: nn.Module, x: Tensor, target: Target, method: str, *, create_graph: bool = False,
                        eps: float | Tensor | None = None, layer: nn.Module | str | None = None
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """As ``explain``, and also the model's logits and the explained classes, both from the explanation's
    own forward pass: a frozen teacher is run once per step, not once for its logits and again for its
    map, and a student's logits can feed another loss. The logits keep their graph when ``create_graph``
    (else they are detached); ``target`` callables always receive them detached."""
    explainer: Callable[..., Tensor] = EXPLAINERS.get(method)
    seen: dict[str, Tensor] = {}

    def recording(logits: Tensor) -> Tensor:
        classes = target(logits.detach()) if callable(target) else target
        if classes.shape != (x.shape[0],):
            raise ValueError(f"target must hold one class index per sample, shape ({x.shape[0]},), "
                             f"got {tuple(classes.shape)}")
        seen["logits"], seen["target"] = logits, classes
        return classes

    with torch.enable_grad():  # works inside no_grad blocks too (e.g. a frozen teacher's maps)
        heatmap = explainer(model, x, recording, create_graph=create_graph, eps=eps, layer=layer)
    if create_graph:
        return heatmap, seen["logits"], seen["target"]
    return heatmap.detach(), seen["logits"].detach(), seen["target"]
