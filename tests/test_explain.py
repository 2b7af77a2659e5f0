"""Proof of correctness of the explanation engine (CPU, float64).

- parameter gradients of a heatmap loss equal central finite differences, for every method, in train
  and eval mode (the maps are exact under double backward);
- LRP-0 (ε = 0) equals Gradient×Input; relevance is conserved on bias-free ReLU nets;
- LRP-ε equals zennit's Epsilon rule with its ResNet canonizer (eval mode);
- Grad-CAM equals an independent computation; explaining leaves parameters and state untouched;
- torchvision and timm ResNets are explained as they are (shared in-place ReLUs, in-place sums), with the
  heatmaps of their zoo equivalents.
"""
from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn

from bench.explain import explain, explain_with_logits, list_explainers, register_lrp_structure
from bench.explain.cam import upsample
from bench.explain.lrp import relevance
from bench.explain.structure import STRUCTURES
from bench.models import BasicBlock, Bottleneck, DenseNet, ResNet, SmallCNN, create_model

METHODS = ["lrp", "lrp_flex", "gradinput", "inputgrad", "gradcam", "attention"]


def tiny_resnet(block: type = BasicBlock) -> nn.Module:
    torch.manual_seed(0)
    model = ResNet(block, [1, 1, 1, 1], num_classes=4, small_input=True).double()
    _randomise_batch_norm(model)
    return model


def tiny_densenet() -> nn.Module:
    torch.manual_seed(0)
    model = DenseNet(growth=4, blocks=(2, 2), init_features=8, num_classes=4, small_input=True).double()
    _randomise_batch_norm(model)
    return model


TINY_MODELS = {
    "resnet": (tiny_resnet, [("conv1.weight", (1, 0, 1, 1)), ("layer1.0.bn1.weight", (2,)),
                             ("layer2.0.conv2.weight", (0, 3, 1, 0)), ("layer3.0.downsample.1.bias", (5,)),
                             ("layer4.0.conv1.weight", (7, 1, 2, 2)), ("fc.weight", (1, 3))]),
    "densenet": (tiny_densenet, [("features.conv0.weight", (1, 0, 1, 1)),
                                 ("features.denseblock1.denselayer1.norm1.weight", (3,)),
                                 ("features.denseblock1.denselayer2.conv2.weight", (2, 5, 1, 1)),
                                 ("features.transition1.conv.weight", (3, 7, 0, 0)),
                                 ("features.denseblock2.denselayer1.norm2.bias", (4,)),
                                 ("features.norm5.bias", (6,)), ("classifier.weight", (1, 3))]),
}


def _randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters (fresh ones are the identity)."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator, dtype=torch.float64) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator, dtype=torch.float64) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator, dtype=torch.float64) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator, dtype=torch.float64) * 0.2 - 0.1)


def inputs(batch: int = 3, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.rand(batch, 3, size, size, generator=generator, dtype=torch.float64), torch.tensor([0, 1, 3][:batch])


def test_every_method_is_registered() -> None:
    assert set(METHODS) <= set(list_explainers())


@pytest.mark.parametrize("architecture", TINY_MODELS)
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("method", METHODS)
def test_parameter_gradients_match_finite_differences(method: str, mode: str, architecture: str) -> None:
    build, probes = TINY_MODELS[architecture]
    model = build()
    getattr(model, mode)()
    x, target = inputs()
    eps = torch.tensor([0.01, 0.05, 0.1], dtype=torch.float64)
    weights = torch.randn(explain(model, x, target, method, eps=eps).shape, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(3))

    def loss() -> torch.Tensor:
        return (explain(model, x, target, method, eps=eps, create_graph=True) * weights).sum()

    params = dict(model.named_parameters())
    if method in ("gradcam", "attention"):  # the feature maps do not depend on the classifier
        probes = [(name, index) for name, index in probes if not name.startswith(("fc.", "classifier."))]
    grads = torch.autograd.grad(loss(), [params[name] for name, _ in probes], allow_unused=True)
    step = 1e-6
    for (name, index), grad in zip(probes, grads, strict=True):
        param = params[name]
        with torch.no_grad():
            original = param[index].item()
            param[index] = original + step
            up = loss().item()
            param[index] = original - step
            down = loss().item()
            param[index] = original
        numeric = (up - down) / (2 * step)
        analytic = 0.0 if grad is None else grad[index].item()
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), (method, mode, name)
    assert any(grad is not None and grad.abs().sum() > 0 for grad in grads)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("model_name", ["small_cnn", "resnet18", "resnet18_small", "resnet50", "densenet121_small"])
def test_lrp_zero_equals_gradient_times_input(model_name: str, mode: str) -> None:
    torch.manual_seed(0)
    model = getattr(create_model(model_name, 10).double(), mode)()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([3, 7])
    reference = explain(model, x, target, "gradinput")
    torch.testing.assert_close(explain(model, x, target, "lrp_flex", eps=0.0), reference, rtol=1e-10, atol=1e-12)
    exact = relevance(model, x, target, 0.0, create_graph=False, flex=False, norm_stabiliser=0.0)
    torch.testing.assert_close(exact, reference, rtol=1e-10, atol=1e-12)
    # (`explain(..., "lrp")` keeps zennit's 1e-6 Norm stabiliser on pooling and sums, which is not small where
    # a residual sum is near 0; its parity with zennit is tested below)


def bias_free_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 10, bias=False),
    ).double().eval()


def test_relevance_is_conserved_on_bias_free_nets() -> None:
    model = bias_free_net()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 2, 4, 9])
    logits = model(x).gather(1, target.view(-1, 1)).squeeze(1)
    for flex in (False, True):
        heat = relevance(model, x, target, 0.0, create_graph=False, flex=flex, norm_stabiliser=0.0)
        torch.testing.assert_close(heat.sum(dim=(1, 2, 3)), logits.detach(), rtol=1e-10, atol=1e-12)
    # with ε > 0 relevance is absorbed: |Σ R| shrinks
    absorbed = explain(model, x, target, "lrp", eps=1.0).sum(dim=(1, 2, 3))
    assert bool((absorbed.abs() < logits.abs()).all())


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_lrp_equals_zennit_epsilon_with_resnet_canonizer(block: type) -> None:
    zennit = pytest.importorskip("zennit")
    torchvision = pytest.importorskip("torchvision")
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Norm, Pass
    from zennit.torchvision import ResNetCanonizer
    from zennit.types import Activation, AvgPool, Convolution, Linear

    factory = torchvision.models.resnet18 if block is BasicBlock else torchvision.models.resnet50
    reference_model = factory(num_classes=10).double().eval()
    ours = create_model("resnet18" if block is BasicBlock else "resnet50", 10).double().eval()
    _randomise_batch_norm(reference_model)
    ours.load_state_dict(reference_model.state_dict())
    # zennit 0.5.1 merges BN into the conv but leaves an identity BN that still divides by sqrt(1 + bn.eps);
    # with bn.eps = 0 both models compute exactly the same function, so the heatmaps can be compared exactly
    for model in (reference_model, ours):
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = 0.0
    x = torch.rand(3, 3, 64, 64, dtype=torch.float64)
    target = torch.tensor([0, 5, 9])
    for eps in (1e-9, 0.05, 1.0):
        composite = LayerMapComposite(
            layer_map=[(Activation, Pass()), (Sum, Norm()), (AvgPool, Norm()), (Convolution, Epsilon(epsilon=eps)),
                       (Linear, Epsilon(epsilon=eps))],
            canonizers=[ResNetCanonizer()],
        )
        with torch.no_grad():
            logits = reference_model(x)
        with Gradient(model=reference_model, composite=composite) as attributor:
            # zennit starts from the relevance given; LRP starts from the explained logit's value
            _, expected = attributor(x, torch.eye(10, dtype=torch.float64)[target] * logits)
        torch.testing.assert_close(explain(ours, x, target, "lrp", eps=eps), expected, rtol=1e-9, atol=1e-12)
    assert zennit is not None


def test_lrp_on_densenet_concatenation_conserves_relevance() -> None:
    """Bias-free DenseNet-style net (no BN): LRP-0 relevance sums to the logit through concatenations."""
    model = DenseNet(growth=4, blocks=(2, 2), init_features=8, num_classes=4, small_input=True).double().eval()
    for module in model.modules():  # batch norm with zero mean/shift and unit scale is bias-free
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 3])
    logits = model(x).gather(1, target.view(-1, 1)).squeeze(1)
    heat = relevance(model, x, target, 0.0, create_graph=False, flex=False, norm_stabiliser=0.0)
    torch.testing.assert_close(heat.sum(dim=(1, 2, 3)), logits.detach(), rtol=1e-10, atol=1e-12)


def test_per_sample_eps() -> None:
    model = tiny_resnet().eval()
    x, target = inputs()
    eps = torch.tensor([0.0, 0.05, 0.5], dtype=torch.float64)
    together = explain(model, x, target, "lrp", eps=eps)
    # eval mode: samples are independent, so each row equals a one-sample explanation with its own ε
    for i in range(3):
        alone = explain(model, x[i:i + 1], target[i:i + 1], "lrp", eps=float(eps[i]))
        torch.testing.assert_close(together[i:i + 1], alone)


def test_gradcam_equals_an_independent_computation() -> None:
    model = tiny_resnet().eval()
    x, target = inputs()
    features = {}
    model.layer4.register_forward_hook(lambda m, i, o: features.__setitem__("a", o))
    logits = model(x)
    activation = features["a"]
    maps = []
    for i in range(3):  # per sample, with an explicit loop over channels
        (grad,) = torch.autograd.grad(logits[i, target[i]], activation, retain_graph=True)
        weights = [grad[i, c].mean() for c in range(activation.shape[1])]
        total = sum(w * activation[i, c] for c, w in enumerate(weights))
        maps.append(torch.clamp(total, min=0).unsqueeze(0))
    expected = torch.stack(maps)
    torch.testing.assert_close(explain(model, x, target, "gradcam"), expected.detach())
    torch.testing.assert_close(explain(model, x, target, "gradcam", layer="layer4"), expected.detach())
    attention = explain(model, x, target, "attention", layer=model.layer4)
    torch.testing.assert_close(attention, activation.detach().pow(2).sum(1, keepdim=True))
    assert upsample(attention, x).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_explaining_leaves_parameters_and_state_unchanged(method: str, mode: str) -> None:
    model = getattr(tiny_resnet(), mode)()
    x, target = inputs()
    model(x)  # one forward first, so that train-mode BN statistics are compared after the same number of calls
    before = copy.deepcopy(model.state_dict())
    names = [name for name, _ in model.named_parameters()]
    explain(model, x, target, method, create_graph=True)
    model_state = model.state_dict()
    for key, value in before.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")) and mode == "train":
            continue  # a train-mode forward updates BN running statistics, as any forward does
        assert torch.equal(value, model_state[key]), key
    assert [name for name, _ in model.named_parameters()] == names
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("method", METHODS)
def test_frozen_models_inside_no_grad(method: str) -> None:
    """A frozen teacher explained inside torch.no_grad(): the map exists and carries no graph."""
    model = tiny_resnet().eval().requires_grad_(False)
    x, target = inputs()
    with torch.no_grad():
        heat = explain(model, x, target, method)
    assert not heat.requires_grad and torch.isfinite(heat).all() and heat.abs().sum() > 0


@pytest.mark.parametrize("model_name", ["small_cnn", "resnet18", "resnet18_small", "resnet34", "resnet50",
                                        "densenet121", "densenet121_small"])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_shapes_for_the_zoo(model_name: str, size: int) -> None:
    if model_name == "densenet121" and size == 28:
        pytest.skip("torchvision's DenseNet121 shrinks 28×28 to nothing before its last block (use densenet121_small)")
    model = create_model(model_name, 10).eval()
    x = torch.rand(2, 3, size, size)
    target = torch.tensor([1, 2])
    for method in ("lrp", "lrp_flex", "gradinput", "inputgrad"):
        assert explain(model, x, target, method).shape == x.shape
    for method in ("gradcam", "attention"):
        heat = explain(model, x, target, method)
        assert heat.dim() == 4 and heat.shape[:2] == (2, 1)


def test_unknown_containers_are_refused() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(x)

    with pytest.raises(NotImplementedError, match="no LRP rule for Branchy"):
        explain(Branchy(), torch.rand(2, 4), torch.tensor([0, 1]), "lrp")
    assert isinstance(SmallCNN(10), nn.Module)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_hook_based_lrp_flex_gives_the_same_map_but_not_the_exact_gradient(mode: str) -> None:
    """ReLU backward hooks left active reproduce the heatmap, but the second backward reuses the modified
    derivative, so the parameter gradient is not the map's true gradient; the explicit pass (``lrp_flex``,
    the paper code's training gradient) is exact (finite-difference test above)."""
    model = getattr(tiny_resnet(), mode)()
    x, target = inputs()
    eps = torch.tensor([0.01, 0.05, 0.1], dtype=torch.float64)
    exact = explain(model, x, target, "lrp_flex", eps=eps)
    torch.testing.assert_close(explain(model, x, target, "lrp_flex_hooks", eps=eps), exact, rtol=1e-10, atol=1e-12)
    weights = torch.randn(exact.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    params = list(model.parameters())

    def flat_grad(method: str) -> torch.Tensor:
        loss = (explain(model, x, target, method, eps=eps, create_graph=True) * weights).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                          for g, p in zip(grads, params, strict=True)])

    cosine = torch.nn.functional.cosine_similarity(flat_grad("lrp_flex"), flat_grad("lrp_flex_hooks"), dim=0)
    assert float(cosine) < 0.999


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_vgg_style_torchvision_model_with_inplace_relus(mode: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models.vgg11_bn(num_classes=10).double(), mode)()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([1, 2])
    torch.manual_seed(1)  # the same dropout masks in both passes (train mode)
    reference = explain(model, x, target, "gradinput")
    torch.manual_seed(1)
    exact = relevance(model, x, target, 0.0, create_graph=False, flex=False, norm_stabiliser=0.0)
    torch.testing.assert_close(exact, reference, rtol=1e-10, atol=1e-12)
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))  # never switched off


def library_model(source: str) -> nn.Module:
    """A torchvision or timm model as users hold it ("library-name"), float64, with non-trivial batch norms."""
    library, name = source.split("-")
    torch.manual_seed(0)
    if library == "timm":
        model = pytest.importorskip("timm").create_model(name, pretrained=False, num_classes=10)
    else:
        model = getattr(pytest.importorskip("torchvision").models, name)(num_classes=10)
    model = model.double().eval()
    _randomise_batch_norm(model)
    return model


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[tuple[str, int, object]]]:
    """The model's state and its module objects with their in-place flags (to check that nothing changed)."""
    modules = [(name, id(m), getattr(m, "inplace", None)) for name, m in model.named_modules()]
    return copy.deepcopy(model.state_dict()), modules


@pytest.mark.parametrize("source", ["torchvision-resnet18", "torchvision-resnet50", "timm-resnet18", "timm-resnet50"])
def test_torchvision_and_timm_resnets_are_explained_as_they_are(source: str) -> None:
    """Their blocks use one in-place ReLU module several times and add the shortcut in place; LRP explains
    each ReLU call at its position and gives the zoo-converted model's heatmaps, leaving the model as it was."""
    from bench.models import convert_model

    model = library_model(source)
    ours = convert_model(model)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([0, 1])
    state, modules = snapshot(model)
    for method in ("lrp", "lrp_flex"):
        expected = explain(ours, x, target, method, eps=0.05)
        torch.testing.assert_close(explain(model, x, target, method, eps=0.05), expected, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(relevance(model, x, target, 0.0, create_graph=False, flex=False, norm_stabiliser=0.0),
                               explain(model, x, target, "gradinput"), rtol=1e-9, atol=1e-12)
    heat = explain(model, x, target, "lrp", create_graph=True)
    (grad,) = torch.autograd.grad(heat.sum(), model.fc.weight)  # the user's parameters, not a copy's
    assert grad.abs().sum() > 0
    after_state, after_modules = snapshot(model)
    assert after_modules == modules and after_state.keys() == state.keys()
    assert all(torch.equal(value, after_state[key]) for key, value in state.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m) for m in model.modules())


def test_unregistered_structures_get_one_clear_error() -> None:
    """torchvision's DenseNet applies functional ReLU and pooling in its forward: no structure is registered
    for it (bench.models.convert_model gives the zoo's equivalent)."""
    model = library_model("torchvision-densenet121")
    with pytest.raises(NotImplementedError, match=r"no LRP rule for DenseNet \(torchvision\.models\.densenet\)"):
        explain(model, torch.rand(1, 3, 32, 32, dtype=torch.float64), torch.tensor([0]), "lrp")


def test_in_place_sums_must_be_declared() -> None:
    """A residual block that adds in place overwrites a recorded output unless its registration says so."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.linear(x)
            out += x
            return self.relu(out)

    torch.manual_seed(0)
    model = nn.Sequential(Block(), nn.Linear(4, 3)).double()
    x = torch.rand(2, 4, dtype=torch.float64)
    target = torch.tensor([0, 2])
    register_lrp_structure(Block, "residual", activation="relu")
    with pytest.raises(ValueError, match="overwritten in place"):
        explain(model, x, target, "lrp")
    register_lrp_structure(Block, "residual", activation="relu", inplace_sum=True)
    exact = relevance(model, x, target, 0.0, create_graph=False, flex=False, norm_stabiliser=0.0)
    torch.testing.assert_close(exact, explain(model, x, target, "gradinput"), rtol=1e-10, atol=1e-12)


def test_hook_based_lrp_flex_refuses_shared_and_in_place_relus() -> None:
    """Its ReLU backward hooks would see one activation per module, and torch forbids them on in-place ReLUs."""
    relu = nn.ReLU()
    shared = nn.Sequential(nn.Linear(4, 4), relu, nn.Linear(4, 4), relu, nn.Linear(4, 3))
    for model in (shared, nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 3))):
        with pytest.raises(ValueError, match="lrp_flex_hooks needs out-of-place ReLU modules, each used once"):
            explain(model, torch.rand(2, 4), torch.tensor([0, 1]), "lrp_flex_hooks")
    assert not any(m._forward_hooks or m._backward_hooks for m in shared.modules())


def test_structures_registered_by_name_name_real_classes() -> None:
    pytest.importorskip("timm")
    for name in (key for key in STRUCTURES if isinstance(key, str)):
        module_name, _, class_name = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module_name), class_name), type), name


@pytest.mark.parametrize("model_name", ["resnet50", "densenet121"])
def test_imagenet_size_inputs(model_name: str) -> None:
    model = create_model(model_name, 10).eval()
    x = torch.rand(1, 3, 224, 224)
    target = torch.tensor([4])
    heat = explain(model, x, target, "lrp", create_graph=True)
    assert heat.shape == x.shape and torch.isfinite(heat).all()
    heat.abs().sum().backward()
    assert explain(model, x, target, "gradcam").shape == (1, 1, 7, 7)


@pytest.mark.parametrize("method", METHODS + ["lrp_flex_hooks"])
def test_callable_target_sees_the_logits_of_the_same_pass(method: str) -> None:
    model = tiny_resnet().eval()
    x, _ = inputs()
    expected_logits = model(x).detach()
    top = expected_logits.argmax(1)
    heatmap, logits, target = explain_with_logits(model, x, lambda z: z.argmax(1), method, eps=0.05)
    torch.testing.assert_close(logits, expected_logits)
    assert torch.equal(target, top) and not logits.requires_grad
    torch.testing.assert_close(heatmap, explain(model, x, top, method, eps=0.05))


def test_target_of_the_wrong_shape_is_refused() -> None:
    x, target = inputs()
    with pytest.raises(ValueError, match="one class index per sample"):
        explain(tiny_resnet(), x, target[:2], "lrp")


def test_logits_keep_their_graph_under_create_graph() -> None:
    model = tiny_resnet().train()
    x, target = inputs()
    heatmap, logits, _ = explain_with_logits(model, x, target, "gradcam", create_graph=True)
    assert logits.requires_grad and heatmap.requires_grad
    params = [p for p in model.parameters()]
    from_explain = torch.autograd.grad(logits.sum(), params, retain_graph=True, allow_unused=True)
    direct = torch.autograd.grad(model(x).sum(), params, allow_unused=True)
    for a, b in zip(from_explain, direct, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b)
