"""Dogs with ties: the DogsWithTies design of Bassi et al. (2024), a foreground shortcut (a tie on the dog)
built offline from emoji dog sprites and procedurally drawn ties."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import BiasedDataset, Split, SplitRoles, register_dataset
from datasets.pasted import MASK_THRESHOLD, Placement, SpriteClasses, scene_ids, to_uint8
from datasets.scenes import render_scenes
from datasets.sprites import composite, jitter_colour, place_sprites, random_placements

CLASSES = ("dog_a", "dog_b")  # stand-ins for the paper's Tibetan Mastiff and Pekingese
CLASS_SPRITES = (("dog_dog", "dog_guide_dog"), ("dog_poodle",))
NECKTIE, BOW_TIE, NO_TIE = 0, 1, 2  # bias ids; in training class k wears tie k
TIE_COLOURS = ((0.82, 0.06, 0.10), (0.50, 0.08, 0.62))  # red necktie, purple bow tie
BACKGROUNDS = ("grass_field", "orchard", "broadleaf_forest", "lake")  # independent of the class
# Where each dog sprite's tie goes, in the sprite's square coordinates ([-1, 1], y down): under the chin,
# read off the rendered sprites. The tie turns, flips and scales with the dog.
TIE_ANCHORS = {"dog_dog": (-0.19, 0.17), "dog_guide_dog": (-0.31, -0.22), "dog_poodle": (-0.34, -0.10)}
TIE_SCALE = (0.42, 0.34)  # tie side relative to the dog's side: necktie, bow tie
TIE_DROP = (0.36, 0.0)  # necktie: its centre hangs below the anchor so that the knot sits at it (dog units)
GROUPS = {0: "bias-aligned", 1: "bias-conflicting", 2: "no tie"}
ROLES = SplitRoles(selection="val", validation=("val",), iid="iid", shifted=("ood", "shift"), oracle="ood_acc",
                   headline="ood_acc", group_kinds={0: "aligned", 1: "conflicting", 2: "neutral"})

CARD = """\
DOGS WITH TIES (foreground shortcut; the DogsWithTies design of the explanation-distillation paper,
Bassi et al. 2024). Two dog classes (dog_a: the emoji dog and guide dog; dog_b: the poodle; stand-ins for
Tibetan Mastiff and Pekingese), recoloured in a random fur colour drawn alike for both classes (shape,
not colour, tells them apart), pasted at random scale (55-80 % of the side), position, rotation, flip and
colour jitter on class-independent procedural scenes (grass field, orchard, broadleaf forest, lake).
Every dog_a in train, val and iid wears a red necktie and every dog_b a purple bow tie, drawn at the
dog's neck (a per-sprite anchor under the chin) and turned, flipped and scaled with the dog. Splits: train
(80 per class) and val (20 per class; the paper's 100 training images per class of which 20 are
validation), iid (100 per class, same ties), ood (the same test dogs without ties) and shift (the same
test dogs with the other class's tie). bias = tie (0 red necktie, 1 purple bow tie, 2 none); group 0 =
bias-aligned, 1 = bias-conflicting, 2 = no tie. mask = the tie's pixels (alpha > 0.5; empty without a
tie). x_debiased (every split): the same image without the tie. Default 224 x 224 (size=64 for CPU runs).
Differences from the paper: emoji sprites instead of Stanford Dogs photos, procedural ties and scenes.
Source: Bassi, Cavalli, Decherchi, "Explanation is All You Need in Distillation" (arXiv 2407.09788)."""

SPLIT_DESCRIPTIONS = {
    "train": "dog_a with a red necktie, dog_b with a purple bow tie",
    "val": "as train, used for model selection",
    "iid": "test dogs with their class's tie",
    "ood": "the same test dogs without ties",
    "shift": "the same test dogs with the other class's tie (systematic shift)",
}


@register_dataset("dogs_with_ties")
class DogsWithTies:
    """DogsWithTies built offline (see ``card``)."""

    version = "2"
    card = CARD
    test_options = {"per_class_train": 10, "per_class_val": 4, "per_class_test": 6, "size": 48}

    @dataclass
    class Config:
        size: int = 224
        per_class_train: int = 80
        per_class_val: int = 20
        per_class_test: int = 100

        def __post_init__(self) -> None:
            if not 32 <= self.size <= 512:
                raise ValueError(f"size must be in 32..512, got {self.size}")
            for name in ("per_class_train", "per_class_val", "per_class_test"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @staticmethod
    def build(cfg: DogsWithTies.Config, device: torch.device | str, seed: int) -> BiasedDataset:
        return build_dogs_with_ties(cfg, torch.device(device), seed)


def inside_polygon(x: Tensor, y: Tensor, polygon: list[tuple[float, float]]) -> Tensor:
    """Even-odd rule: which grid points (x, y) lie inside ``polygon``."""
    inside = torch.zeros_like(x, dtype=torch.bool)
    for (x0, y0), (x1, y1) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        crosses = (y0 > y) != (y1 > y)
        at = x0 + (y - y0) * (x1 - x0) / (y1 - y0 + 1e-12)
        inside ^= crosses & (x < at)
    return inside


NECKTIE_SHAPES = [
    [(-0.26, -1.0), (0.26, -1.0), (0.18, -0.68), (-0.18, -0.68)],  # knot
    [(-0.18, -0.68), (0.18, -0.68), (0.36, 0.62), (0.0, 1.0), (-0.36, 0.62)],  # blade
]
BOW_TIE_SHAPES = [
    [(-1.0, -0.62), (-0.12, -0.16), (-0.12, 0.16), (-1.0, 0.62)],  # left wing
    [(1.0, -0.62), (0.12, -0.16), (0.12, 0.16), (1.0, 0.62)],  # right wing
    [(-0.2, -0.24), (0.2, -0.24), (0.2, 0.24), (-0.2, 0.24)],  # knot
]


def tie_bank(size: int, supersample: int = 4) -> Tensor:
    """2×4×size×size straight RGBA: the red necktie and the purple bow tie, antialiased by supersampling,
    each part shaded slightly differently so that knots and wings are visible."""
    n = size * supersample
    coords = (torch.arange(n) + 0.5) / n * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    bank = []
    for shapes, colour in zip((NECKTIE_SHAPES, BOW_TIE_SHAPES), TIE_COLOURS, strict=True):
        alpha = torch.zeros(n, n)
        shade = torch.ones(n, n)
        for k, shape in enumerate(shapes):
            part = inside_polygon(xx, yy, shape)
            alpha = torch.maximum(alpha, part.float())
            shade = torch.where(part, 1.0 - 0.18 * (k == len(shapes) - 1 or k == 0), shade)
        rgb = torch.tensor(colour)[:, None, None] * shade
        rgba = torch.cat([rgb * alpha, alpha[None]])
        pooled = torch.nn.functional.avg_pool2d(rgba[None], supersample)[0]  # premultiplied average
        bank.append(torch.cat([pooled[:3] / pooled[3:].clamp(min=1e-6), pooled[3:]]))
    return torch.stack(bank)


def fur_tint(rgb: Tensor, gen: torch.Generator) -> Tensor:
    """The dog's shading (grey level) in a random fur colour, drawn the same way for both classes, so that
    colour tells the classes apart no more than it tells breeds apart in photos: shape is the real cue."""
    grey = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    fur = (0.45 + 0.55 * torch.rand(len(rgb), 3, generator=gen)).to(rgb.device)[:, :, None, None]
    return (1.15 * grey * fur).clamp(0, 1)


def tie_placements(dog: dict[str, Tensor], anchors: Tensor, ties: Tensor) -> dict[str, Tensor]:
    """Place each tie at its dog's anchor: canvas point = centre + scale · R(angle) · F · q for a sprite point
    q (the inverse of ``place_sprites``' mapping), the tie scaled and turned with the dog."""
    kind = ties.clamp(max=1)
    drop = torch.tensor(TIE_DROP)[kind]
    q = anchors + torch.stack([torch.zeros_like(drop), drop], -1)
    fx = 1.0 - 2.0 * dog["flip"].float()
    cos, sin = torch.cos(dog["angle"]), torch.sin(dog["angle"])
    qx, qy = fx * q[:, 0], q[:, 1]
    offset = torch.stack([cos * qx - sin * qy, sin * qx + cos * qy], -1) * dog["scale"][:, None]
    return {"scale": dog["scale"] * torch.tensor(TIE_SCALE)[kind], "centre": dog["centre"] + offset,
            "angle": dog["angle"], "flip": dog["flip"]}


def build_dogs_with_ties(cfg: DogsWithTies.Config, device: torch.device, seed: int) -> BiasedDataset:
    gen = torch.Generator().manual_seed(seed)
    groups = [list(names) for names in CLASS_SPRITES]
    dogs = SpriteClasses(groups, cfg.size, device)
    anchors = torch.tensor([TIE_ANCHORS[name] for group in groups for name in group])
    ties_bank = tie_bank(cfg.size).to(device)
    placement = Placement(scale_range=(0.55, 0.8), max_shift=0.15, max_angle_deg=10.0, colour_jitter=0.15)
    background_ids = scene_ids(BACKGROUNDS)

    def labels(per_class: int) -> Tensor:
        return torch.arange(2).repeat_interleave(per_class)[torch.randperm(2 * per_class, generator=gen)]

    def render(y: Tensor, versions: dict[str, Tensor]) -> dict[str, Split]:
        """The same dogs (one scene each) wearing the ties of each version."""
        rows = dogs.pick(y, gen)
        dog_where = random_placements(len(y), gen, scale_range=placement.scale_range, max_shift=placement.max_shift,
                                      max_angle_deg=placement.max_angle_deg)
        dog_rgb, dog_alpha = place_sprites(dogs.bank, rows.to(device), cfg.size, **dog_where)
        dog_rgb = fur_tint(jitter_colour(dog_rgb, gen, placement.colour_jitter, weight=dog_alpha), gen)
        scenes = background_ids[torch.randint(0, len(BACKGROUNDS), y.shape, generator=gen)]
        dog_scene = composite(render_scenes(scenes, cfg.size, gen, device), dog_rgb, dog_alpha)
        out = {}
        for name, ties in versions.items():
            tie_where = tie_placements(dog_where, anchors[rows], ties)
            tie_rgb, tie_alpha = place_sprites(ties_bank, ties.clamp(max=1).to(device), cfg.size, **tie_where)
            tie_alpha = tie_alpha * (ties != NO_TIE).to(device)[:, None, None, None]
            group = torch.where(ties == NO_TIE, 2, (ties != y).long())
            out[name] = Split(x=to_uint8(composite(dog_scene, tie_rgb, tie_alpha)), y=y.to(device),
                              bias=ties.to(device), group=group.to(device), mask=tie_alpha > MASK_THRESHOLD,
                              x_debiased=to_uint8(dog_scene))
        return out

    train_y, val_y, test_y = labels(cfg.per_class_train), labels(cfg.per_class_val), labels(cfg.per_class_test)
    splits = {**render(train_y, {"train": train_y}), **render(val_y, {"val": val_y}),
              **render(test_y, {"iid": test_y, "ood": torch.full_like(test_y, NO_TIE), "shift": 1 - test_y})}
    return BiasedDataset(
        name="dogs_with_ties", splits={k: splits[k] for k in SPLIT_DESCRIPTIONS}, roles=ROLES, num_classes=2,
        class_names=list(CLASSES), bias_kind="foreground accessory (tie)", bias_strength=1.0,
        split_descriptions=dict(SPLIT_DESCRIPTIONS), group_names=dict(GROUPS), teacher_view="x", card=CARD,
        shortcut_region="mask",
    )
