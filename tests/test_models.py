"""Model zoo: shapes, torchvision parity, one distinct ReLU module per use (LRP and ReLU hooks need it), and
every container's structure declared to the LRP engine."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from bench.explain.lrp import PLAIN_LEAVES
from bench.explain.structure import lrp_structure
from bench.models import create_model, feature_module, list_models


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet18_small", "small_cnn", "densenet121_small"])
@pytest.mark.parametrize("size", [28, 32])
def test_forward_shapes(name: str, size: int) -> None:
    model = create_model(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith("bcos_")])  # B-cos nets have no ReLU
def test_every_relu_is_a_distinct_module_used_once(name: str) -> None:
    model = create_model(name, num_classes=10).train()
    calls: dict[str, int] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, nn.ReLU):
            assert not module.inplace, f"{module_name} must not be in-place"
            module.register_forward_hook(lambda m, i, o, key=module_name: calls.__setitem__(key, calls.get(key, 0) + 1))
    model(torch.rand(2, 3, 32, 32))
    assert calls and all(count == 1 for count in calls.values()), calls
    uses_functional_relu = 0
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            uses_functional_relu += 1
    assert uses_functional_relu == len(calls)


@pytest.mark.parametrize("name,factory", [("resnet18", torchvision.models.resnet18),
                                          ("resnet34", torchvision.models.resnet34),
                                          ("resnet50", torchvision.models.resnet50),
                                          ("densenet121", torchvision.models.densenet121)])
def test_zoo_matches_torchvision(name: str, factory: object) -> None:
    """Same parameter names and the same function as torchvision's models (their weights load as they are)."""
    ours = create_model(name, num_classes=10).eval()
    reference = factory(num_classes=10).eval()  # type: ignore[operator]
    ours.load_state_dict(reference.state_dict())
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_paper_resnet_is_not_adapted_to_small_inputs() -> None:
    """The distillation paper's ResNet18 keeps the ImageNet stem: layer4 is 1×1 at 28×28."""
    shapes = {}
    for name in ("resnet18", "resnet18_small"):
        model = create_model(name, num_classes=10).eval()
        feature_module(model).register_forward_hook(lambda m, i, o, key=name: shapes.__setitem__(key, o.shape))
        model(torch.rand(1, 3, 28, 28))
    assert shapes["resnet18"][-2:] == (1, 1)
    assert shapes["resnet18_small"][-2:] == (4, 4)


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith("bcos_")])  # B-cos: own explanation
def test_every_container_declares_its_lrp_structure(name: str) -> None:
    """The LRP engine knows the zoo only through the structures its classes register (bench.explain.structure)."""
    model = create_model(name, num_classes=10)
    undeclared = {type(m).__name__ for m in model.modules()
                  if lrp_structure(type(m)) is None and not isinstance(m, PLAIN_LEAVES)}
    assert not undeclared
