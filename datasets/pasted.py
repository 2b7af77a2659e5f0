"""Objects pasted on scenes: the renderer shared by the sprite-on-background families
(``objects_on_scenes``, ``waterbirds_like``). Every random choice is drawn on a CPU generator, in chunks of
fixed size, so a dataset is the same on any device; the pixels are computed on the device."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import Split
from datasets.scenes import render_scenes, scene_index
from datasets.sprites import composite, jitter_colour, load_sprite_bank, place_sprites, random_placements

CHUNK = 512  # images rendered at a time (bounds memory at 224×224)
MASK_THRESHOLD = 0.5  # alpha above this is object


@dataclass(frozen=True)
class Placement:
    """How objects are placed: scale range (fraction of the side), centre shift, rotation, colour jitter."""

    scale_range: tuple[float, float] = (0.5, 0.8)
    max_shift: float = 0.2
    max_angle_deg: float = 15.0
    colour_jitter: float = 0.2


class SpriteClasses:
    """A bank of sprites grouped by class: ``pick`` draws one of a class's sprites per image."""

    def __init__(self, groups: list[list[str]], size: int, device: torch.device) -> None:
        names = [name for group in groups for name in group]
        self.bank = load_sprite_bank(names, size).to(device)
        starts = torch.tensor([0] + [len(g) for g in groups]).cumsum(0)
        self.first, self.count = starts[:-1], torch.tensor([len(g) for g in groups])

    def pick(self, classes: Tensor, gen: torch.Generator) -> Tensor:
        """For each class id, a row of the bank holding one of that class's sprites (uniformly)."""
        offset = (torch.rand(len(classes), generator=gen) * self.count[classes]).long()
        return self.first[classes] + offset


@dataclass
class Scene:
    """What one image shows: a sprite row of the bank and a scene category (index in SCENE_CATEGORIES)."""

    sprites: Tensor
    scenes: Tensor


def scene_ids(names: tuple[str, ...]) -> Tensor:
    return torch.tensor([scene_index(name) for name in names])


def render_objects(sprites: SpriteClasses, rows: Tensor, gen: torch.Generator, size: int, placement: Placement,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """(colour N×3×S×S, alpha N×1×S×S) of the chosen sprites, placed and colour-jittered."""
    where = random_placements(len(rows), gen, scale_range=placement.scale_range, max_shift=placement.max_shift,
                              max_angle_deg=placement.max_angle_deg)
    rgb, alpha = place_sprites(sprites.bank, rows.to(device), size, **where)
    return jitter_colour(rgb, gen, placement.colour_jitter, weight=alpha), alpha


def to_uint8(images: Tensor) -> Tensor:
    return images.clamp(0, 1).mul(255).round_().to(torch.uint8)


def paste_on_scenes(objects: tuple[Tensor, Tensor], scenes: Tensor, gen: torch.Generator, size: int,
                    device: torch.device) -> Tensor:
    """The rendered objects over freshly drawn scenes of the given categories, as uint8."""
    background = render_scenes(scenes, size, gen, device)
    return to_uint8(composite(background, *objects))


def render_versions(sprites: SpriteClasses, rows: Tensor, versions: dict[str, Tensor], gen: torch.Generator,
                    size: int, placement: Placement, device: torch.device, debiased: bool
                    ) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
    """The same placed objects over the scene categories of each version (e.g. iid / ood / shift), chunk by
    chunk: ({version: N×3×S×S uint8}, object mask N×1×S×S bool, debiased view over uniform noise or None)."""
    out: dict[str, list[Tensor]] = {name: [] for name in versions}
    masks, noisy = [], []
    for start in range(0, len(rows), CHUNK):
        part = slice(start, start + CHUNK)
        rgb, alpha = render_objects(sprites, rows[part], gen, size, placement, device)
        for name, scenes in versions.items():
            out[name].append(paste_on_scenes((rgb, alpha), scenes[part], gen, size, device))
        masks.append(alpha > MASK_THRESHOLD)
        if debiased:
            noise = torch.rand(len(rgb), 3, size, size, generator=gen).to(device)
            noisy.append(to_uint8(composite(noise, rgb, alpha)))
    return ({name: torch.cat(parts) for name, parts in out.items()}, torch.cat(masks),
            torch.cat(noisy) if debiased else None)


def make_split(x: Tensor, y: Tensor, bias: Tensor, group: Tensor, mask: Tensor | None, device: torch.device,
               x_debiased: Tensor | None = None) -> Split:
    return Split(x=x, y=y.to(device), bias=bias.to(device), group=group.to(device), mask=mask,
                 x_debiased=x_debiased)
