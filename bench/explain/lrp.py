"""LRP-ε and LRP-Flex as an explicit, differentiable relevance pass.

For ReLU networks, LRP with the ε-rule can be written in "gradient × input" form: the heatmap is
``x ⊙ g`` where ``g`` is obtained like an input gradient, except that at every ε-position the gradient
is multiplied by ``z / (z + ε·sign(z))`` (``z``: the value there). We build ``g`` module by module,
from the last layer back, out of ordinary differentiable operations: each module's vector-Jacobian
product is taken with ``torch.autograd.grad`` on the tensors recorded in one forward pass, and the
ε-rescalings are elementwise products with graph-connected activations. With ``create_graph=True``
the heatmap is therefore an ordinary differentiable function of the parameters and its parameter
gradients are exact (no modified backward hooks, whose second backward reuses the modified derivative).

Rules (Bach et al., 2015; Montavon et al., 2019):
- ``lrp``: ε on the output of every conv/linear layer, batch norm merged into the conv before it (ε sits
  after the batch norm), the same heatmap as zennit's Epsilon rule with its ResNet canonizer; a batch
  norm with no conv before it (DenseNet's pre-activation layers) is an affine layer with its own ε;
- ``lrp_flex`` (Bassi et al., 2024; Faster ISNet): ε only where a ReLU follows, i.e. the factor
  ``a / (a + ε)`` on every ReLU's output; the last layer is LRP-0;
- ReLU (``lrp``), max-pool (winner-take-all), flatten, dropout, identity: their plain vector-Jacobian
  product;
- average/adaptive pooling and residual addition: split by contribution (LRP-0; in ``lrp`` with zennit's
  Norm-rule stabiliser 1e-6, so that heatmaps equal zennit's);
- DenseNet concatenation: each part's relevance goes back to the tensor it came from;
- batch norm: its vector-Jacobian product in the module's mode (eval: the merged per-channel scale;
  train: including the batch-statistic terms, as the distillation paper's code does).

Structure comes from per-type rules: chain containers (``nn.Sequential`` and the zoo's models) and
residual blocks; a container with no rule is refused rather than explained wrongly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from bench.explain.registry import Target, register_explainer, resolve_target
from bench.models import BasicBlock, Bottleneck, ConvNet3, DenseBlock, DenseLayer, DenseNet, ResNet, SmallCNN

DEFAULT_EPS = 1e-2
NORM_STABILISER = 1e-6  # zennit's Norm rule (sums, average pooling): LRP-0 with this stabiliser
AFFINE = (nn.Conv2d, nn.Linear)
NORM = (nn.BatchNorm2d, nn.BatchNorm1d)
PLAIN_LEAVES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity,
                *NORM, *AFFINE)

Rule = Callable[["RelevancePass", nn.Module, Tensor], Tensor]
RULES: dict[type, Rule] = {}
CHAIN_CONTAINERS: list[type] = [nn.Sequential, ResNet, SmallCNN, ConvNet3, DenseNet, DenseLayer, torchvision.models.VGG]


def register_rule(*types: type) -> Callable[[Rule], Rule]:
    """Register the relevance rule of a module type (its forward's structure)."""

    def decorator(rule: Rule) -> Rule:
        for module_type in types:
            RULES[module_type] = rule
        return rule

    return decorator


def register_chain_container(module_type: type) -> type:
    """Declare that ``module_type``'s forward calls its children one after the other (glue such as
    flattening in between is allowed; branches are not)."""
    CHAIN_CONTAINERS.append(module_type)
    return module_type


@dataclass
class RelevancePass:
    """One forward pass's records and the backward relevance (gradient-form) propagation over them."""

    flex: bool
    eps: Tensor
    create_graph: bool
    norm_stabiliser: float = NORM_STABILISER
    records: dict[nn.Module, tuple[Tensor, Tensor]] = field(default_factory=dict)
    call_order: list[nn.Module] = field(default_factory=list)

    def record(self, model: nn.Module, x: Tensor) -> Tensor:
        """One forward pass recording every module's input and output. In-place ReLUs (torchvision's)
        would overwrite recorded tensors, so they run out of place for this pass."""
        handles = []
        inplace = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(lambda m, i: self.call_order.append(m)))
            handles.append(module.register_forward_hook(self._store))
        for module in inplace:
            module.inplace = False
        try:
            return model(x)
        finally:
            for handle in handles:
                handle.remove()
            for module in inplace:
                module.inplace = True

    def _store(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        if module in self.records:
            raise ValueError(f"module {type(module).__name__} is called twice in one forward; LRP needs every "
                             "module (every ReLU in particular) used once: for torchvision and timm ResNets "
                             "use bench.models.convert_model(model)")
        self.records[module] = (inputs[0], output)

    # --- building blocks ----------------------------------------------------------------------
    def vjp(self, output: Tensor, inputs: Tensor, grad: Tensor) -> Tensor:
        """grad ⋅ ∂output/∂inputs (plain), differentiable when ``create_graph``."""
        if output is inputs:
            return grad
        (result,) = torch.autograd.grad(output, inputs, grad, create_graph=self.create_graph, retain_graph=True)
        return result

    def module_vjp(self, module: nn.Module, grad: Tensor) -> Tensor:
        inputs, output = self.records[module]
        return self.vjp(output, inputs, grad)

    def epsilon_factor(self, z: Tensor, eps: Tensor | None = None) -> Tensor:
        """z / (z + ε·sign(z)), sign(0) = +1 (zennit's stabiliser); 1 where the denominator is 0 (ε = 0)."""
        eps = self.eps if eps is None else eps
        eps = eps.view(-1, *([1] * (z.dim() - 1))) if eps.dim() else eps
        denominator = z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
        return torch.where(denominator == 0, torch.ones_like(z), z / safe)

    def relu_factor(self, a: Tensor) -> Tensor:
        """a / (a + ε) where a > 0, else 0 (LRP-Flex's ReLU)."""
        eps = self.eps.view(-1, *([1] * (a.dim() - 1))) if self.eps.dim() else self.eps
        positive = a > 0
        safe = torch.where(positive, a + eps, torch.ones_like(a))
        return torch.where(positive, a / safe, torch.zeros_like(a))

    def propagate(self, module: nn.Module, grad: Tensor) -> Tensor:
        """Gradient-form relevance at the input of ``module`` from the one at its output."""
        for module_type in type(module).__mro__:
            if module_type in RULES:
                return RULES[module_type](self, module, grad)
        if isinstance(module, tuple(CHAIN_CONTAINERS)):
            return self.chain(self.children_in_call_order(module), grad, module)
        if isinstance(module, PLAIN_LEAVES):
            return self.leaf(module, grad)
        raise NotImplementedError(
            f"no LRP rule for {type(module).__name__}; register one with bench.explain.lrp.register_rule "
            "(or register_chain_container if its forward is a plain chain of its children)")

    def norm_factor(self, z: Tensor) -> Tensor:
        """The Norm rule's rescaling in ``lrp`` (none in ``lrp_flex``, whose pooling and sums are plain)."""
        if self.flex or self.norm_stabiliser == 0:
            return torch.ones_like(z)
        return self.epsilon_factor(z, torch.full((), self.norm_stabiliser, dtype=z.dtype, device=z.device))

    def leaf(self, module: nn.Module, grad: Tensor) -> Tensor:
        if isinstance(module, nn.ReLU) and self.flex:
            grad = grad * self.relu_factor(self.records[module][1])
        if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            grad = grad * self.norm_factor(self.records[module][1])
        return self.module_vjp(module, grad)

    def children_in_call_order(self, container: nn.Module) -> list[nn.Module]:
        children = {id(child) for child in container.children()}
        return [m for m in self.call_order if id(m) in children and m in self.records]

    def chain(self, modules: list[nn.Module], grad: Tensor, container: nn.Module | None = None) -> Tensor:
        """Through ``modules`` called one after the other; ``grad`` is at the last one's output (or at the
        container's output); returns the relevance at the first one's input (or the container's)."""
        if container is not None:
            grad = self.vjp(self.records[container][1], self.records[modules[-1]][1], grad)
        i = len(modules) - 1
        while i >= 0:
            module = modules[i]
            merged = (isinstance(module, NORM) and i > 0 and isinstance(modules[i - 1], AFFINE)
                      and self.records[modules[i - 1]][1] is self.records[module][0])
            if isinstance(module, (*AFFINE, *NORM)):  # a batch norm on its own is an affine layer too
                grad = self.affine_unit(modules[i - 1:i + 1] if merged else [module], grad)
                i -= 2 if merged else 1
            else:
                grad = self.propagate(module, grad)
                i -= 1
            if i >= 0:  # glue between the previous module's output and this input (e.g. flatten)
                grad = self.vjp(self.records[modules[i + 1]][0], self.records[modules[i]][1], grad)
        if container is not None:
            grad = self.vjp(self.records[modules[0]][0], self.records[container][0], grad)
        return grad

    def affine_unit(self, unit: list[nn.Module], grad: Tensor) -> Tensor:
        """A conv/linear layer, with the batch norm that follows it: ε at the unit's output (``lrp``)."""
        if not self.flex:
            grad = grad * self.epsilon_factor(self.records[unit[-1]][1])
        for module in reversed(unit):
            grad = self.module_vjp(module, grad)
        return grad


@register_rule(BasicBlock, Bottleneck)
def residual_block(lrp: RelevancePass, block: nn.Module, grad: Tensor) -> Tensor:
    """relu_out(main(x) + shortcut(x)): the sum passes relevance to both branches by contribution."""
    last_relu: nn.Module = block.relu2 if isinstance(block, BasicBlock) else block.relu3  # type: ignore[assignment]
    downsample: nn.Module | None = block.downsample  # type: ignore[assignment]
    grad = lrp.propagate(last_relu, grad)
    grad = grad * lrp.norm_factor(lrp.records[last_relu][0])
    main = [m for m in lrp.children_in_call_order(block) if m is not last_relu and m is not downsample]
    through_main = lrp.chain(main, grad)
    through_shortcut = grad if downsample is None else lrp.propagate(downsample, grad)
    return through_main + through_shortcut


@register_rule(DenseBlock)
def dense_block(lrp: RelevancePass, block: nn.Module, grad: Tensor) -> Tensor:
    """x_k = cat(x_{k-1}, layer_k(x_{k-1})): split the channels, send the new ones through layer k."""
    for layer in reversed(list(block.children())):
        layer_input = lrp.records[layer][0]
        kept, new = grad.split([layer_input.shape[1], grad.shape[1] - layer_input.shape[1]], dim=1)
        grad = kept + lrp.propagate(layer, new)
    return grad


def as_eps_tensor(eps: float | Tensor | None, x: Tensor) -> Tensor:
    """ε as a tensor on x's device: a scalar is filled on the device (no host-to-device copy, so a step
    using it stays CUDA-graph capturable); a per-sample tensor is used as it is."""
    if isinstance(eps, Tensor):
        return eps.to(dtype=x.dtype)
    return torch.full((), DEFAULT_EPS if eps is None else float(eps), dtype=x.dtype, device=x.device)


def relevance(model: nn.Module, x: Tensor, target: Target, eps: float | Tensor | None, create_graph: bool,
              flex: bool, norm_stabiliser: float = NORM_STABILISER) -> Tensor:
    """x ⊙ g, the LRP heatmap (B×C×H×W) of logit ``target`` for each sample. ``norm_stabiliser`` 0 makes
    pooling and sums exact LRP-0 (then ε = 0 gives exactly Gradient×Input)."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    eps_tensor = as_eps_tensor(eps, x)
    lrp = RelevancePass(flex=flex, eps=eps_tensor, create_graph=create_graph, norm_stabiliser=norm_stabiliser)
    logits = lrp.record(model, x)
    grad = torch.zeros_like(logits).scatter_(1, resolve_target(logits, target).view(-1, 1), 1.0)
    return x * lrp.propagate(model, grad)


@register_explainer("lrp")
def lrp_epsilon(model: nn.Module, x: Tensor, target: Target, *, create_graph: bool = False,
                eps: float | Tensor | None = None, **_: Any) -> Tensor:
    """LRP-ε on every conv/linear layer (batch norm merged into the preceding conv)."""
    return relevance(model, x, target, eps, create_graph, flex=False)


@register_explainer("lrp_flex")
def lrp_flex(model: nn.Module, x: Tensor, target: Target, *, create_graph: bool = False,
             eps: float | Tensor | None = None, **_: Any) -> Tensor:
    """LRP-Flex (Bassi et al., 2024, Section 3.2): ε at ReLU positions, last layer LRP-0."""
    return relevance(model, x, target, eps, create_graph, flex=True)


@register_explainer("lrp_flex_hooks")
def lrp_flex_hooks(model: nn.Module, x: Tensor, target: Target, *, create_graph: bool = False,
                   eps: float | Tensor | None = None, **_: Any) -> Tensor:
    """LRP-Flex the way the paper's public code computes it: a backward hook on every ReLU replaces
    the incoming gradient g by g·a/(a+ε), then x ⊙ ∂y_k/∂x. The heatmap equals ``lrp_flex``'s; its
    parameter gradients under ``create_graph`` are those of the paper's training (they differ slightly
    from the exact ones, see tests/test_explain.py), for faithful reproduction only."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    eps_tensor = as_eps_tensor(eps, x)
    factors = RelevancePass(flex=True, eps=eps_tensor, create_graph=create_graph)
    outputs: dict[nn.Module, Tensor] = {}
    handles = []
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(lambda m, i, o: outputs.__setitem__(m, o)))
            handles.append(module.register_full_backward_hook(
                lambda m, grad_in, grad_out: (grad_out[0] * factors.relu_factor(outputs[m]),)  # type: ignore[index]
            ))
    try:
        logits = model(x)
        score = logits.gather(1, resolve_target(logits, target).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
    finally:
        for handle in handles:
            handle.remove()
    return x * grad
