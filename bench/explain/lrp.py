"""LRP-ε and LRP-Flex as an explicit, differentiable relevance pass.

For ReLU networks, LRP with the ε-rule can be written in "gradient × input" form: the heatmap is
``x ⊙ g`` where ``g`` is obtained like an input gradient, except that at every ε-position the gradient
is multiplied by ``z / (z + ε·sign(z))`` (``z``: the value there). We build ``g`` module call by module
call, from the last layer back, out of ordinary differentiable operations: each call's vector-Jacobian
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

Structure comes from the structures that model code registers (``bench.explain.structure``: chain,
residual, concat); a container with none is refused rather than explained wrongly. This module imports
no model. Every call of a module is recorded on its own, so a module used at several positions (the one
``relu`` of a torchvision ResNet block) is explained per position; in-place modules and in-place sums
never overwrite a recorded tensor (see ``RelevancePass.record``), and the user's model is not modified.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bench.explain.registry import Target, register_explainer, resolve_target
from bench.explain.structure import LrpStructure, lrp_structure

DEFAULT_EPS = 1e-2
NORM_STABILISER = 1e-6  # zennit's Norm rule (sums, average pooling): LRP-0 with this stabiliser
AFFINE = (nn.Conv2d, nn.Linear)
NORM = (nn.BatchNorm2d, nn.BatchNorm1d)
PLAIN_LEAVES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity,
                *NORM, *AFFINE)


@dataclass(eq=False)
class Call:
    """One call of a module in the recorded forward pass. ``output`` is what the module returned, kept
    intact; ``returned`` is what its caller received: ``output``, or a copy that the caller may overwrite
    (children of a block that sums in place). ``children``: the module calls made inside, in order."""

    module: nn.Module
    input: Tensor
    clone_children: bool = False
    output: Tensor = field(init=False)
    returned: Tensor = field(init=False)
    output_version: int = field(init=False)
    children: list[Call] = field(default_factory=list)


StructureRule = Callable[["RelevancePass", Call, LrpStructure, Tensor], Tensor]
STRUCTURE_RULES: dict[str, StructureRule] = {}


def structure_rule(kind: str) -> Callable[[StructureRule], StructureRule]:
    """Register the relevance rule of a structure kind (``bench.explain.structure``)."""

    def decorator(rule: StructureRule) -> StructureRule:
        STRUCTURE_RULES[kind] = rule
        return rule

    return decorator


@dataclass
class RelevancePass:
    """One forward pass's records and the backward relevance (gradient-form) propagation over them."""

    flex: bool
    eps: Tensor
    create_graph: bool
    norm_stabiliser: float = NORM_STABILISER
    calls: list[Call] = field(default_factory=list)  # the top-level calls (the model's)
    _open: list[Call] = field(default_factory=list)  # calls entered and not yet left

    def record(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Call]:
        """One forward pass recording every module call's input and output; returns the logits and the
        model's call. Nothing of the model is changed: an in-place module (torchvision's ReLUs) gets a
        copy of its input, so that the tensor recorded as the previous call's output stays intact."""
        handles = []
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(self._enter))
            handles.append(module.register_forward_hook(self._leave))
        try:
            logits = model(x)
        finally:
            for handle in handles:
                handle.remove()
            self._open.clear()
        self._check_rules()
        self._check_intact()
        return logits, self.calls[0]

    def _enter(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        structure = lrp_structure(type(module))
        call = Call(module, args[0], clone_children=structure is not None and structure.inplace_sum)
        (self._open[-1].children if self._open else self.calls).append(call)
        self._open.append(call)
        if getattr(module, "inplace", False) is True and isinstance(args[0], Tensor):
            return (args[0].clone(), *args[1:])
        return None

    def _leave(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor | None:
        call = self._open.pop()
        call.output, call.returned, call.output_version = output, output, output._version
        if self._open and self._open[-1].clone_children:  # the parent may add to it in place
            call.returned = output.clone()
            return call.returned
        return None

    def _check_rules(self) -> None:
        """Refuse a container with no registered structure before anything else goes wrong."""
        for call in walk(self.calls):
            if lrp_structure(type(call.module)) is None and not isinstance(call.module, PLAIN_LEAVES):
                raise no_rule(call.module)

    def _check_intact(self) -> None:
        for call in walk(self.calls):
            if call.output._version != call.output_version:
                raise ValueError(
                    f"the output of {type(call.module).__name__} was overwritten in place after it was recorded "
                    "(e.g. `out += identity`); register its container with inplace_sum=True "
                    "(bench.explain.register_lrp_structure)")

    # --- building blocks ----------------------------------------------------------------------
    def vjp(self, output: Tensor, inputs: Tensor, grad: Tensor) -> Tensor:
        """grad ⋅ ∂output/∂inputs (plain), differentiable when ``create_graph``."""
        if output is inputs:
            return grad
        (result,) = torch.autograd.grad(output, inputs, grad, create_graph=self.create_graph, retain_graph=True)
        return result

    def call_vjp(self, call: Call, grad: Tensor) -> Tensor:
        return self.vjp(call.output, call.input, grad)

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

    def propagate(self, call: Call, grad: Tensor) -> Tensor:
        """Gradient-form relevance at the input of ``call`` from the one at its output."""
        structure = lrp_structure(type(call.module))
        if structure is not None:
            return STRUCTURE_RULES[structure.kind](self, call, structure, grad)
        if isinstance(call.module, PLAIN_LEAVES):
            return self.leaf(call, grad)
        raise no_rule(call.module)

    def norm_factor(self, z: Tensor) -> Tensor:
        """The Norm rule's rescaling in ``lrp`` (none in ``lrp_flex``, whose pooling and sums are plain)."""
        if self.flex or self.norm_stabiliser == 0:
            return torch.ones_like(z)
        return self.epsilon_factor(z, torch.full((), self.norm_stabiliser, dtype=z.dtype, device=z.device))

    def leaf(self, call: Call, grad: Tensor) -> Tensor:
        if isinstance(call.module, nn.ReLU) and self.flex:
            grad = grad * self.relu_factor(call.output)
        if isinstance(call.module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            grad = grad * self.norm_factor(call.output)
        return self.call_vjp(call, grad)

    def chain(self, calls: list[Call], grad: Tensor, container: Call | None = None) -> Tensor:
        """Through ``calls`` made one after the other; ``grad`` is at the last one's output (or at the
        container's output); returns the relevance at the first one's input (or the container's)."""
        if not calls:  # e.g. an empty nn.Sequential: nothing but glue
            return grad if container is None else self.vjp(container.output, container.input, grad)
        if container is not None:
            grad = self.vjp(container.output, calls[-1].output, grad)
        i = len(calls) - 1
        while i >= 0:
            call = calls[i]
            merged = (isinstance(call.module, NORM) and i > 0 and isinstance(calls[i - 1].module, AFFINE)
                      and calls[i - 1].returned is call.input)
            if isinstance(call.module, (*AFFINE, *NORM)):  # a batch norm on its own is an affine layer too
                grad = self.affine_unit(calls[i - 1:i + 1] if merged else [call], grad)
                i -= 2 if merged else 1
            else:
                grad = self.propagate(call, grad)
                i -= 1
            if i >= 0:  # glue between the previous call's output and this input (e.g. flatten)
                grad = self.vjp(calls[i + 1].input, calls[i].output, grad)
        if container is not None:
            grad = self.vjp(calls[0].input, container.input, grad)
        return grad

    def affine_unit(self, unit: list[Call], grad: Tensor) -> Tensor:
        """A conv/linear layer, with the batch norm that follows it: ε at the unit's output (``lrp``)."""
        if not self.flex:
            grad = grad * self.epsilon_factor(unit[-1].output)
        for call in reversed(unit):
            grad = self.call_vjp(call, grad)
        return grad


def no_rule(module: nn.Module) -> NotImplementedError:
    module_type = type(module)
    return NotImplementedError(
        f"no LRP rule for {module_type.__name__} ({module_type.__module__}); declare how its forward combines "
        "its children with bench.explain.register_lrp_structure (kinds: chain, residual, concat)")


def walk(calls: list[Call]) -> Iterator[Call]:
    """Every call in ``calls`` and, depth first, every call made inside them."""
    pending = list(reversed(calls))
    while pending:
        call = pending.pop()
        yield call
        pending.extend(reversed(call.children))


@structure_rule("chain")
def chain_container(lrp: RelevancePass, call: Call, structure: LrpStructure, grad: Tensor) -> Tensor:
    """A forward that calls its children one after the other: each call's rule in turn, glue in between."""
    return lrp.chain(call.children, grad, call)


@structure_rule("residual")
def residual_block(lrp: RelevancePass, call: Call, structure: LrpStructure, grad: Tensor) -> Tensor:
    """activation(main(x) + shortcut(x)): the sum passes relevance to both branches by contribution
    (LRP-0; zennit's Norm rule in ``lrp``)."""
    block = call.module
    activation = block.get_submodule(structure.activation or "")
    shortcut = getattr(block, structure.shortcut) if structure.shortcut else None  # None: the identity
    *body, last = call.children
    if last.module is not activation:
        raise ValueError(f"{type(block).__name__}'s forward does not end with its registered activation "
                         f"{structure.activation!r}")
    grad = lrp.vjp(call.output, last.output, grad)
    grad = lrp.propagate(last, grad)
    grad = grad * lrp.norm_factor(last.input)
    shortcut_calls = [c for c in body if shortcut is not None and c.module is shortcut]
    main = [c for c in body if c not in shortcut_calls]
    through_main = lrp.chain(main, grad)
    through_shortcut = lrp.propagate(shortcut_calls[0], grad) if shortcut_calls else grad
    return through_main + through_shortcut


@structure_rule("concat")
def dense_block(lrp: RelevancePass, call: Call, structure: LrpStructure, grad: Tensor) -> Tensor:
    """x_k = cat(x_{k-1}, layer_k(x_{k-1})): split the channels, send the new ones through layer k."""
    for layer in reversed(call.children):
        kept, new = grad.split([layer.input.shape[1], grad.shape[1] - layer.input.shape[1]], dim=1)
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
    logits, call = lrp.record(model, x)
    grad = torch.zeros_like(logits).scatter_(1, resolve_target(logits, target).view(-1, 1), 1.0)
    return x * lrp.propagate(call, grad)


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
    """LRP-Flex through ReLU backward hooks that stay registered during the training backward: each hook
    replaces the incoming gradient g by g·a/(a+ε), then x ⊙ ∂y_k/∂x. The heatmap equals ``lrp_flex``'s, but
    the second backward runs through the same modified derivatives, so its parameter gradient is *not* the
    map's gradient (tests/test_explain.py). This is not what the paper's code trains with: there the hooks act
    only while the heatmap is computed, and the training gradient is the exact one (``lrp_flex``). Kept as a
    cautionary variant: a hook-based implementation that forgets to remove its hooks trains on this."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    eps_tensor = as_eps_tensor(eps, x)
    factors = RelevancePass(flex=True, eps=eps_tensor, create_graph=create_graph)
    outputs: dict[nn.Module, Tensor] = {}
    refusal = ("lrp_flex_hooks needs out-of-place ReLU modules, each used once per forward (the paper's models, the "
               "zoo's); use lrp_flex, which explains in-place and shared ReLUs")
    if any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules()):  # full backward hooks forbid them
        raise ValueError(refusal)

    def keep(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        if module in outputs:  # its backward hook would see only the last call's activation
            raise ValueError(refusal)
        outputs[module] = output

    handles = []
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(keep))
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
