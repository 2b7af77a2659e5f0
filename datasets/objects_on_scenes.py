"""Objects on scenes: the COCO-on-Places design (Ahmed et al. 2021; Bassi et al. 2024, Table 1) built
offline from emoji object sprites and procedural scene textures."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import BiasedDataset, SplitRoles, register_dataset
from datasets.bias import random_other
from datasets.pasted import Placement, SpriteClasses, make_split, render_versions, scene_ids
from datasets.sprites import sprites_in_group

CLASSES = ("boat", "airplane", "truck", "dog", "zebra", "horse", "bird", "train", "bus")
BIAS_SCENES = ("beach", "canyon", "building_facade", "staircase", "sand_desert", "crevasse", "bamboo_forest",
               "broadleaf_forest", "ball_pit")  # scene k is tied to class k in training
NON_BIAS_SCENES = ("kasbah", "lighthouse", "pagoda", "rock_arch")  # training scenes when not biased
OOD_VAL_SCENES = ("oast_house", "orchard", "viaduct")
OOD_TEST_SCENES = ("water_tower", "waterfall", "zen_garden")
SCENES = BIAS_SCENES + NON_BIAS_SCENES + OOD_VAL_SCENES + OOD_TEST_SCENES  # bias id = index here
GROUPS = {0: "bias-aligned", 1: "bias-conflicting", 2: "neutral scene"}
ROLES = SplitRoles(selection="val", validation=("val", "val_ood"), iid="iid", shifted=("ood", "shift"),
                   oracle="val_ood_acc", headline="ood_acc",
                   group_kinds={0: "aligned", 1: "conflicting", 2: "neutral"})

CARD = """\
OBJECTS ON SCENES (background shortcut; the COCO-on-Places design of Ahmed et al., used by the
explanation-distillation paper's Table 1). 9 object classes (boat, airplane, truck, dog, zebra, horse,
bird, train, bus), each an emoji sprite (Noto Color Emoji, 1-5 sprites per class) pasted on a procedural
scene texture at random scale (50-80 % of the side), position, rotation (+-15 deg), flip and colour jitter.
In training, class k sits on its scene category (beach, canyon, building facade, staircase, sand desert,
crevasse, bamboo forest, broadleaf forest, ball pit) with probability `strength` (1.0 = the paper's 100 %
setting; Ahmed used 0.8), else on one of 4 non-bias scenes (kasbah, lighthouse, pagoda, rock arch).
Splits (per class, default 800 / 100 / 100 as in Ahmed): train; val (biased, for selection); val_ood
(the val objects on 3 unseen validation scenes: oast house, orchard, viaduct; for oracle selection only);
iid (test objects, same rule as train); ood (the same test objects on 3 unseen scenes: water tower,
waterfall, zen garden); shift (the same test objects on the bias scene of another class, uniform over the
other 8). bias = scene id (0-8 class scenes, 9-12 non-bias, 13-15 OOD val, 16-18 OOD test); group 0 =
bias-aligned, 1 = another class's scene, 2 = neutral scene. mask = the object's pixels (alpha > 0.5).
x_debiased (every split): the same object over uniform noise. It is the teacher's view (Section 3.3.1 of
the paper): the teacher trains on it and is fed it during distillation, and its test accuracy is measured
on it, as in the paper (where the teacher scores the same on all test sets).
Differences from COCO-on-Places: sprites and textures instead of COCO photos and Places images; the
scene names are labels of texture families. Sources: Ahmed et al., "Systematic generalisation with group
invariant predictions" (ICLR 2021), coco_places.py; Bassi et al. (arXiv 2407.09788), Section 4."""

SPLIT_DESCRIPTIONS = {
    "train": "class scene with probability strength, else a non-bias scene",
    "val": "biased validation set (same rule as train), used for model selection",
    "val_ood": "the val objects on unseen validation scenes (oracle selection only)",
    "iid": "test objects, same rule as train",
    "ood": "the same test objects on unseen test scenes",
    "shift": "the same test objects on another class's training scene (systematic shift)",
}


@register_dataset("objects_on_scenes")
class ObjectsOnScenes:
    """COCO-on-Places built offline (see ``card``)."""

    version = "1"
    card = CARD
    test_options = {"per_class_train": 16, "per_class_val": 8, "per_class_test": 8, "size": 32}

    @dataclass
    class Config:
        strength: float = 1.0
        size: int = 64
        per_class_train: int = 800
        per_class_val: int = 100
        per_class_test: int = 100

        def __post_init__(self) -> None:
            if not 0.0 <= self.strength <= 1.0:
                raise ValueError(f"strength must be in [0, 1], got {self.strength}")
            if not 16 <= self.size <= 512:
                raise ValueError(f"size must be in 16..512, got {self.size}")
            for name in ("per_class_train", "per_class_val", "per_class_test"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @staticmethod
    def build(cfg: ObjectsOnScenes.Config, device: torch.device | str, seed: int) -> BiasedDataset:
        return build_objects_on_scenes(cfg, torch.device(device), seed)


def training_scenes(y: Tensor, strength: float, gen: torch.Generator) -> Tensor:
    """Scene id per image: the class scene with probability ``strength``, else a uniform non-bias scene."""
    biased = torch.rand(len(y), generator=gen) < strength
    neutral = len(BIAS_SCENES) + torch.randint(0, len(NON_BIAS_SCENES), y.shape, generator=gen)
    return torch.where(biased, y, neutral)


def unseen_scenes(n: int, first: int, count: int, gen: torch.Generator) -> Tensor:
    return first + torch.randint(0, count, (n,), generator=gen)


def scene_group(y: Tensor, bias: Tensor) -> Tensor:
    return torch.where(bias >= len(BIAS_SCENES), 2, (bias != y).long())


def build_objects_on_scenes(cfg: ObjectsOnScenes.Config, device: torch.device, seed: int) -> BiasedDataset:
    gen = torch.Generator().manual_seed(seed)
    sprites = SpriteClasses([sprites_in_group(c) for c in CLASSES], cfg.size, device)
    categories = scene_ids(SCENES)  # bias id → SCENE_CATEGORIES index
    placement = Placement()
    classes = len(CLASSES)

    def labels(per_class: int) -> Tensor:
        return torch.arange(classes).repeat_interleave(per_class)[torch.randperm(classes * per_class, generator=gen)]

    def render(y: Tensor, biases: dict[str, Tensor], debiased: bool) -> dict[str, tuple]:
        rows = sprites.pick(y, gen)
        images, mask, noisy = render_versions(sprites, rows, {k: categories[b] for k, b in biases.items()}, gen,
                                              cfg.size, placement, device, debiased)
        return {k: (images[k], y, b, scene_group(y, b), mask, noisy) for k, b in biases.items()}

    train_y, val_y, test_y = labels(cfg.per_class_train), labels(cfg.per_class_val), labels(cfg.per_class_test)
    ood_val_first, ood_test_first = len(BIAS_SCENES) + len(NON_BIAS_SCENES), len(SCENES) - len(OOD_TEST_SCENES)
    parts = {
        **render(train_y, {"train": training_scenes(train_y, cfg.strength, gen)}, debiased=True),
        **render(val_y, {"val": training_scenes(val_y, cfg.strength, gen),
                         "val_ood": unseen_scenes(len(val_y), ood_val_first, len(OOD_VAL_SCENES), gen)}, True),
        **render(test_y, {"iid": training_scenes(test_y, cfg.strength, gen),
                          "ood": unseen_scenes(len(test_y), ood_test_first, len(OOD_TEST_SCENES), gen),
                          "shift": random_other(test_y, classes, gen)}, debiased=True),
    }
    splits = {}
    for name in SPLIT_DESCRIPTIONS:
        x, y, bias, group, mask, noisy = parts[name]
        splits[name] = make_split(x, y, bias, group, mask, device, noisy)
    return BiasedDataset(
        name="objects_on_scenes", splits=splits, roles=ROLES, num_classes=classes, class_names=list(CLASSES),
        bias_kind="background scene", bias_strength=float(cfg.strength), split_descriptions=dict(SPLIT_DESCRIPTIONS),
        group_names=dict(GROUPS), teacher_view="x_debiased", card=CARD, shortcut_region="outside_mask",
    )
