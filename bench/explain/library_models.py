"""LRP structures of the torch, torchvision and timm modules that users hold as they are.

Registered by full class name, so that nothing is imported here (timm takes seconds to import);
``tests/test_explain.py`` checks that every name resolves to a class. torchvision's ResNet blocks use one
in-place ``relu`` module several times per forward and add the shortcut in place; the engine records every
call of a module separately and keeps the recorded tensors from being overwritten (``bench.explain.lrp``),
so these blocks are explained as they are, with the same heatmaps as the zoo's equivalents.
"""
from __future__ import annotations

from torch import nn

from bench.explain.structure import register_lrp_structure

register_lrp_structure(nn.Sequential, "chain")

for _name in ("torchvision.models.vgg.VGG", "torchvision.models.resnet.ResNet", "timm.models.resnet.ResNet",
              "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d"):
    register_lrp_structure(_name, "chain")

for _name, _activation in (("torchvision.models.resnet.BasicBlock", "relu"),
                           ("torchvision.models.resnet.Bottleneck", "relu"),
                           ("timm.models.resnet.BasicBlock", "act2"),
                           ("timm.models.resnet.Bottleneck", "act3")):
    register_lrp_structure(_name, "residual", activation=_activation, shortcut="downsample", inplace_sum=True)
