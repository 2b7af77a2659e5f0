"""B-cos explanations (Böhle, Fritz & Schiele, "B-cos Networks", CVPR 2022), as e²KD distils them."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bench.explain.registry import Target, register_explainer, resolve_target


@register_explainer("bcos")
def bcos_weights(model: nn.Module, x: Tensor, target: Target, *, create_graph: bool = False, **_: Any) -> Tensor:
    """The dynamic linear map W(x) of logit ``target`` (N×6×H×W, over the input [x, 1 − x]): the input
    gradient taken with the model in B-cos explanation mode, where the dynamic scalings are constants. With
    ``create_graph`` it stays differentiable with respect to the weights (e²KD's B-cos explanation loss)."""
    inner = getattr(model, "inner", None)
    if inner is None or not hasattr(inner, "explanation_mode"):
        raise ValueError("the bcos explanation needs a B-cos model (bcos_resnet18/34/50)")
    x6 = model.add_inverse(x).detach().requires_grad_(True)  # type: ignore[operator]
    with inner.explanation_mode():
        logits = inner(x6)
        score = logits.gather(1, resolve_target(logits, target).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, x6, create_graph=create_graph)
    return grad
