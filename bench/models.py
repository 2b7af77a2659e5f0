"""Model zoo: the paper's torchvision-layout ResNets, a small-input ResNet and a small CNN.

Every ReLU is a distinct, non-inplace module used once per forward (LRP and ReLU hooks need that), so a
torchvision ``BasicBlock``'s shared ``relu`` becomes ``relu1``/``relu2``. Parameter names match
torchvision's, so its state dicts load unchanged. ``model.feature_layer`` names the last feature map
(for Grad-CAM, attention and feature distillation) and ``model.classifier_layer`` the final linear layer.
Each container declares how its forward combines its children (``@lrp_chain``, ``@lrp_residual``,
``@lrp_concat``), which is all the LRP engine (``bench.explain``) knows of the zoo.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from bench.errors import UserError
from bench.explain.structure import lrp_chain, lrp_concat, lrp_residual
from bench.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    return MODELS.create(name, num_classes=num_classes, in_channels=in_channels)


@contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Inside, batch norms still normalise with the batch's statistics (train mode) but leave their running
    statistics as they are: for an auxiliary forward on images the network is never evaluated on (GAIN's
    erased images), whose statistics would otherwise enter the running estimates used at inference."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 − 0)·running + 0·batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@lrp_residual(activation="relu2", shortcut="downsample")
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


@lrp_residual(activation="relu3", shortcut="downsample")
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample
        self.relu3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


@lrp_chain
class ResNet(nn.Module):
    """torchvision's ResNet layout (7×7/2 stem + max-pool) or, with ``small_input``, a 3×3/1 stem and
    no max-pool (the usual CIFAR/MNIST adaptation)."""

    feature_layer = "layer4"
    classifier_layer = "fc"

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int,
                 in_channels: int = 3, small_input: bool = False) -> None:
        super().__init__()
        self.inplanes = 64
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool: nn.Module = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


@lrp_chain
class DenseLayer(nn.Module):
    """BN-ReLU-1×1 conv-BN-ReLU-3×3 conv producing ``growth`` new channels (torchvision's parameter names)."""

    def __init__(self, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


@lrp_concat
class DenseBlock(nn.ModuleDict):
    """Each layer sees the concatenation of the block input and every earlier layer's output."""

    def __init__(self, layers: int, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(in_channels + i * growth, growth, bn_size)
                          for i in range(layers)})

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_channels))
        self.add_module("relu", nn.ReLU())
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


@lrp_chain
class DenseNet(nn.Module):
    """torchvision's DenseNet layout and parameter names, with the final ReLU a module of ``features``
    (``features.relu5``) and the dense blocks written with explicit concatenation."""

    feature_layer = "features"
    classifier_layer = "classifier"

    def __init__(self, growth: int, blocks: tuple[int, ...], init_features: int, num_classes: int,
                 in_channels: int = 3, bn_size: int = 4, small_input: bool = False) -> None:
        super().__init__()
        stem: list[tuple[str, nn.Module]] = [
            ("conv0", nn.Conv2d(in_channels, init_features, 3 if small_input else 7, 1 if small_input else 2,
                                1 if small_input else 3, bias=False)),
            ("norm0", nn.BatchNorm2d(init_features)),
            ("relu0", nn.ReLU()),
        ]
        if not small_input:
            stem.append(("pool0", nn.MaxPool2d(3, 2, 1)))
        self.features = nn.Sequential(OrderedDict(stem))
        channels = init_features
        for i, layers in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(layers, channels, growth, bn_size))
            channels += layers * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.features.add_module("relu5", nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


@lrp_chain
class SmallCNN(nn.Module):
    """A small conv net for quick CPU runs: three conv-BN-ReLU stages (max-pool after the first two), an
    adaptive average pool to 4×4 (spatial layout matters for digits; a global pool loses it), linear."""

    feature_layer = "features"
    classifier_layer = "fc"

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()

        def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *stage(in_channels, width, pool=True),
            *stage(width, 2 * width, pool=True),
            *stage(2 * width, 4 * width, pool=False),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(4 * width * 16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.avgpool(self.features(x))))


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int = 3) -> nn.Module:
    """ResNet18, torchvision layout, not adapted to small inputs (the distillation paper's student)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


@register_model("resnet34")
def resnet34(num_classes: int, in_channels: int = 3) -> nn.Module:
    """ResNet34, torchvision layout (the distillation paper's COLOURED MNIST teacher)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels)


@register_model("resnet50")
def resnet50(num_classes: int, in_channels: int = 3) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels)


@register_model("resnet18_small")
def resnet18_small(num_classes: int, in_channels: int = 3) -> nn.Module:
    """ResNet18 with a 3×3 stride-1 stem and no max-pool (layer4 is 4×4 at 28×28)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, small_input=True)


@register_model("densenet121")
def densenet121(num_classes: int, in_channels: int = 3) -> nn.Module:
    """DenseNet121, torchvision layout (the distillation paper's COCO-on-Places model, at 64×64)."""
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes, in_channels)


@register_model("densenet121_small")
def densenet121_small(num_classes: int, in_channels: int = 3) -> nn.Module:
    """DenseNet121 with a 3×3 stride-1 stem and no max-pool, for 28×28 and 32×32 inputs."""
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes, in_channels, small_input=True)


@register_model("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 3) -> nn.Module:
    """Three-stage CNN (16/32/64 channels) for quick CPU runs."""
    return SmallCNN(num_classes, in_channels)


@lrp_chain
class ConvNet3(nn.Module):
    """The 3-conv CNN of the neuron-differentiation paper for CMNIST (Sec. 4.1: 64, 128, 256 kernels, three
    batch norms), with DCWP's layout: conv 4×4 stride 2 padding 1, BN, ReLU; global average pool; linear."""

    feature_layer = "features"
    classifier_layer = "fc"

    def __init__(self, num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = (64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in zip((in_channels, *widths[:-1]), widths, strict=True):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.avgpool(self.features(x))))


@register_model("cnn3")
def cnn3(num_classes: int, in_channels: int = 3) -> nn.Module:
    """The neuron-differentiation paper's CMNIST network (3 conv layers, 64/128/256)."""
    return ConvNet3(num_classes, in_channels)


class BcosClassifier(nn.Module):
    """A B-cos network (Böhle et al.; the ``bcos`` package, randomly initialised: nothing is downloaded) fed
    the 6-channel input [x, 1 − x] it expects ("AddInverse"). ``inner`` is the B-cos model itself."""

    feature_layer = "inner.layer4"
    classifier_layer = "inner.fc"

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    @staticmethod
    def add_inverse(x: Tensor) -> Tensor:
        return torch.cat([x, 1 - x], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(self.add_inverse(x))


def _bcos_resnet(depth: int, num_classes: int, in_channels: int) -> nn.Module:
    try:
        from bcos.models import resnet as bcos_resnet
    except ImportError:
        raise UserError("B-cos models need the bcos package: pip install '.[bcos]'") from None
    if in_channels != 3:
        raise UserError(f"B-cos models take RGB images (3 channels, 6 with the inverse), got {in_channels}")
    factory = {18: bcos_resnet.resnet18, 34: bcos_resnet.resnet34, 50: bcos_resnet.resnet50}[depth]
    return BcosClassifier(factory(num_classes=num_classes, in_chans=6))


@register_model("bcos_resnet18")
def bcos_resnet18(num_classes: int, in_channels: int = 3) -> nn.Module:
    """B-cos ResNet18 (e²KD's B-cos student), random initialisation."""
    return _bcos_resnet(18, num_classes, in_channels)


@register_model("bcos_resnet34")
def bcos_resnet34(num_classes: int, in_channels: int = 3) -> nn.Module:
    """B-cos ResNet34 (one of e²KD's B-cos teachers), random initialisation."""
    return _bcos_resnet(34, num_classes, in_channels)


@register_model("bcos_resnet50")
def bcos_resnet50(num_classes: int, in_channels: int = 3) -> nn.Module:
    """B-cos ResNet50 (e²KD's Waterbirds B-cos teacher), random initialisation."""
    return _bcos_resnet(50, num_classes, in_channels)


def feature_module(model: nn.Module) -> nn.Module:
    """The module whose output is the model's last feature map."""
    return model.get_submodule(model.feature_layer)  # type: ignore[arg-type]


def classifier_module(model: nn.Module) -> nn.Module:
    """The model's final linear layer."""
    return model.get_submodule(model.classifier_layer)  # type: ignore[arg-type]


def convert_model(model: nn.Module) -> nn.Module:
    """The zoo's equivalent, with the same weights, of a torchvision ResNet or DenseNet or a plain timm
    ResNet (``feature_layer``/``classifier_layer`` included; LRP explains torchvision and timm ResNets as
    they are, with the same heatmaps, but not torchvision's DenseNet, whose forward applies functional
    ReLU and pooling). Other models are returned as they are; a timm ResNet variant whose weights do not
    fit the plain layout is refused."""
    import torchvision

    ours: nn.Module
    model_: Any = model  # attribute access on third-party layouts
    if isinstance(model, torchvision.models.ResNet) or type(model).__module__ == "timm.models.resnet":
        if not isinstance(model_.conv1, nn.Conv2d):
            raise ValueError("this ResNet variant has a deep stem; only the plain torchvision-layout stem fits")
        block: type[BasicBlock] | type[Bottleneck] = (
            Bottleneck if type(model_.layer1[0]).__name__ == "Bottleneck" else BasicBlock)
        layers = [len(getattr(model_, f"layer{i}")) for i in range(1, 5)]
        ours = ResNet(block, layers, model_.fc.out_features, model_.conv1.in_channels,
                      small_input=model_.conv1.kernel_size == (3, 3))
    elif isinstance(model, torchvision.models.DenseNet):
        dense_blocks = [m for name, m in model_.features.named_children() if name.startswith("denseblock")]
        first = next(iter(dense_blocks[0].children()))
        growth = first.conv2.out_channels
        ours = DenseNet(growth, tuple(len(list(b.children())) for b in dense_blocks),
                        model_.features.conv0.out_channels, model_.classifier.out_features,
                        model_.features.conv0.in_channels, bn_size=first.conv1.out_channels // growth)
    else:
        return model
    reference = next(model.parameters())
    try:
        ours.to(device=reference.device, dtype=reference.dtype).load_state_dict(model.state_dict())
    except RuntimeError as err:
        raise ValueError(f"{type(model).__name__} does not fit the zoo's layout: {str(err).splitlines()[0]}") from None
    return ours.train(model.training)
