"""Waterbirds-like: land birds and water birds on land and water scenes (the Waterbirds design of Sagawa et
al. 2020, used by e²KD and ULE), built offline from emoji bird sprites and procedural scene textures."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import BiasedDataset, Split, SplitRoles, register_dataset
from datasets.image_sources import load_waterbirds, waterbirds_fingerprint
from datasets.pasted import Placement, SpriteClasses, make_split, render_versions, scene_ids
from datasets.scenes import SCENE_CATEGORIES
from datasets.sprites import sprites_in_group

CLASSES = ("landbird", "waterbird")
SOURCES = ("sprites", "files")  # files: a user's Waterbirds (metadata.csv layout) under root
PLACES = ("land", "water")
PLACE_SCENES = (("bamboo_forest", "broadleaf_forest"), ("ocean", "lake"))  # as in Waterbirds
GROUPS = {0: "landbird on land", 1: "landbird on water", 2: "waterbird on land", 3: "waterbird on water"}

CARD = """\
WATERBIRDS-LIKE (background shortcut with minority groups; the Waterbirds design of Sagawa et al. 2020,
as used by e2KD and ULE). Two classes: landbird (8 emoji sprites: bird, dove, eagle, owl, parrot, peacock,
rooster, turkey) and waterbird (duck, flamingo, penguin, swan), pasted at random scale (30-50 % of the
side), position, rotation, flip and colour jitter on procedural scene textures: land = bamboo forest or
broadleaf forest, water = ocean or lake (Waterbirds' Places categories). Training: a bird sits on its own
kind of place with probability `strength` (0.95 = Waterbirds; 1.0 = Waterbirds-100) and waterbirds are a minority
(`waterbird_fraction`, 0.232 as in Waterbirds' 3,682 / 1,113 training split). Validation and test: the
same class balance, each class half on land and half on water (Waterbirds' rule), so the minority groups
(landbird on water, waterbird on land) are a quarter-sized share each. Default counts follow Waterbirds:
4,795 train / 1,199 val / 5,794 test, with test_id (the two groups seen in training) and test_ood (the
two swapped groups) as e2KD reports them. bias = place (0 land, 1 water); group = 2 * class + place:
0 landbird on land, 1 landbird on water, 2 waterbird on land, 3 waterbird on water. Worst-group and
average accuracy are read per group. mask = the bird's pixels (alpha > 0.5). x_debiased (every split): the
same bird on a scene of a uniformly random category (any of the 22, independent of the class): the
"background randomised" data on which a right-for-the-right-reasons teacher is trained (e2KD).
Differences from Waterbirds: sprites and textures instead of CUB photos and Places images; no ImageNet
pretraining is possible offline.
Sources: Sagawa et al., "Distributionally Robust Neural Networks" (ICLR 2020); Parchami-Araghi et al.,
"Good Teachers Explain" (e2KD, ECCV 2024); Mitchell et al., ULE (seed 002)."""

SPLIT_DESCRIPTIONS = {
    "train": "bird on its own kind of place with probability strength; waterbirds a minority",
    "val": "each class half on land, half on water (Waterbirds' validation rule), used for model selection",
    "test": "each class half on land, half on water; worst-group accuracy is read from its groups",
    "test_id": "the test images of the groups seen in training (landbird on land, waterbird on water)",
    "test_ood": "the test images of the swapped groups (waterbird on land, landbird on water)",
}
IN_DISTRIBUTION_GROUPS = (0, 3)
# Waterbirds is judged on its worst group; its validation split is group-balanced (an unbiased validation
# split), so the unbiased_val rule can select on it.
ROLES = SplitRoles(selection="val", validation=("val",), iid="test_id", shifted=("test", "test_ood"),
                   oracle="test_worst_group_acc", headline="test_worst_group_acc", unbiased_val="val_worst_group_acc",
                   group_kinds={0: "aligned", 1: "conflicting", 2: "conflicting", 3: "aligned"})


def with_group_splits(splits: dict[str, Split]) -> tuple[dict[str, Split], dict[str, tuple[str, Tensor]]]:
    """Add e²KD's in-distribution and out-of-distribution views of the test split, declared as its subsets."""
    test = splits["test"]
    in_distribution = torch.isin(test.group, torch.tensor(IN_DISTRIBUTION_GROUPS, device=test.group.device))
    subsets = {"test_id": ("test", torch.nonzero(in_distribution).flatten()),
               "test_ood": ("test", torch.nonzero(~in_distribution).flatten())}
    return {**splits, **{name: test.map(lambda t, rows=rows: t[rows]) for name, (_, rows) in subsets.items()}}, subsets


@register_dataset("waterbirds_like")
class WaterbirdsLike:
    """Waterbirds built offline (see ``card``)."""

    version = "3"
    card = CARD
    test_options = {"train_size": 96, "val_size": 48, "test_size": 48, "size": 32}

    @dataclass
    class Config:
        source: str = "sprites"
        root: str | None = None
        strength: float = 0.95
        waterbird_fraction: float = 0.232
        size: int = 64
        train_size: int = 4795
        val_size: int = 1199
        test_size: int = 5794

        def __post_init__(self) -> None:
            if self.source not in SOURCES:
                raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
            if self.source == "files" and not self.root:
                raise ValueError("source=files needs root=<folder holding Waterbirds' metadata.csv>")
            if not 0.5 <= self.strength <= 1.0:
                raise ValueError(f"strength must be in [0.5, 1], got {self.strength}")
            if not 0.0 < self.waterbird_fraction < 1.0:
                raise ValueError(f"waterbird_fraction must be in (0, 1), got {self.waterbird_fraction}")
            if not 16 <= self.size <= 512:
                raise ValueError(f"size must be in 16..512, got {self.size}")
            for name in ("train_size", "val_size", "test_size"):
                if getattr(self, name) < 4:
                    raise ValueError(f"{name} must be at least 4, got {getattr(self, name)}")

    @staticmethod
    def fingerprint(cfg: WaterbirdsLike.Config) -> str:
        return waterbirds_fingerprint(str(cfg.root)) if cfg.source == "files" else "sprites"

    @staticmethod
    def build(cfg: WaterbirdsLike.Config, device: torch.device | str, seed: int) -> BiasedDataset:
        if cfg.source == "files":
            return build_from_files(cfg, torch.device(device))
        return build_waterbirds_like(cfg, torch.device(device), seed)


def bird_labels(n: int, waterbird_fraction: float, gen: torch.Generator) -> Tensor:
    """Exactly round(n · fraction) waterbirds (1), the rest landbirds (0), in random order."""
    y = (torch.arange(n) < round(n * waterbird_fraction)).long()
    return y[torch.randperm(n, generator=gen)]


def training_places(y: Tensor, strength: float, gen: torch.Generator) -> Tensor:
    """Own kind of place with probability ``strength`` (place 1 = water for waterbirds)."""
    own = torch.rand(len(y), generator=gen) < strength
    return torch.where(own, y, 1 - y)


def balanced_places(y: Tensor, gen: torch.Generator) -> Tensor:
    """Within each class, half of the images on land and half on water (in random order)."""
    places = torch.empty_like(y)
    for c in (0, 1):
        members = (y == c).nonzero().flatten()
        half = (torch.arange(len(members)) < len(members) // 2).long()
        places[members] = half[torch.randperm(len(members), generator=gen)]
    return places


def scene_of_place(places: Tensor, gen: torch.Generator) -> Tensor:
    """A scene category (SCENE_CATEGORIES index) per image: one of its place's two scenes, uniformly."""
    table = torch.stack([scene_ids(scenes) for scenes in PLACE_SCENES])  # place × 2
    return table[places, torch.randint(0, 2, places.shape, generator=gen)]


def build_waterbirds_like(cfg: WaterbirdsLike.Config, device: torch.device, seed: int) -> BiasedDataset:
    gen = torch.Generator().manual_seed(seed)
    landbirds = sprites_in_group("bird") + sprites_in_group("landbird")
    sprites = SpriteClasses([landbirds, sprites_in_group("waterbird")], cfg.size, device)
    placement = Placement(scale_range=(0.3, 0.5), colour_jitter=0.35)
    splits = {}
    for name, n in (("train", cfg.train_size), ("val", cfg.val_size), ("test", cfg.test_size)):
        y = bird_labels(n, cfg.waterbird_fraction, gen)
        places = training_places(y, cfg.strength, gen) if name == "train" else balanced_places(y, gen)
        random_scenes = torch.randint(0, len(SCENE_CATEGORIES), y.shape, generator=gen)
        versions = {name: scene_of_place(places, gen), "randomised": random_scenes}
        images, mask, _ = render_versions(sprites, sprites.pick(y, gen), versions, gen, cfg.size, placement, device,
                                          debiased=False)
        splits[name] = make_split(images[name], y, places, 2 * y + places, mask, device, images["randomised"])
    splits, subsets = with_group_splits(splits)
    return BiasedDataset(
        name="waterbirds_like", splits=splits, subsets=subsets, roles=ROLES, num_classes=2, class_names=list(CLASSES),
        bias_kind="background place", bias_strength=float(cfg.strength), split_descriptions=dict(SPLIT_DESCRIPTIONS),
        group_names=dict(GROUPS), teacher_view="x", card=CARD, shortcut_region="outside_mask",
    )


def build_from_files(cfg: WaterbirdsLike.Config, device: torch.device) -> BiasedDataset:
    """The real Waterbirds from a user's files: its own splits and groups, images resized to ``size``; no
    masks or debiased view (Waterbirds ships neither); strength and counts are the files'."""
    data = load_waterbirds(str(cfg.root), cfg.size)
    splits = {name: make_split(part["images"].to(device), part["y"], part["place"], 2 * part["y"] + part["place"],
                               None, device) for name, part in data.items()}
    train = splits["train"]
    strength = float((train.bias == train.y).float().mean()) if len(train) else 0.0
    splits, subsets = with_group_splits(splits)
    return BiasedDataset(
        name="waterbirds_like", splits=splits, subsets=subsets, roles=ROLES, num_classes=2, class_names=list(CLASSES),
        bias_kind="background place", bias_strength=strength, split_descriptions=dict(SPLIT_DESCRIPTIONS),
        group_names=dict(GROUPS), teacher_view="x",
        card=CARD + "\nBuilt from the user's Waterbirds files (source=files): CUB birds on Places scenes.",
    )
