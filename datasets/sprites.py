"""Object sprites (rendered from Noto Color Emoji, see datasets/assets/sprites/README.md) and batched,
GPU-friendly pasting of them onto scenes.

Coordinates: canvases use ``F.affine_grid``'s normalised frame, x in [-1, 1] left to right and y in [-1, 1] top
to bottom, pixel centres at ``(2i + 1) / size - 1`` (``align_corners=False``). A placement puts a sprite's square
(the bank image) with side ``scale`` × the canvas side centred at ``centre = (x, y)``, mirrored left-right first
when ``flip``, then rotated by ``angle`` radians counter-clockwise as displayed (y pointing down).
Importing this module reads no file; everything is loaded on demand.
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import UserError

SPRITE_DIR = Path(__file__).resolve().parent / "assets" / "sprites"
MANIFEST = SPRITE_DIR / "manifest.json"
_EPS = 1e-6


def _missing(what: str) -> UserError:
    return UserError(f"{what} is missing: restore datasets/assets/sprites from git")


@functools.cache
def load_manifest() -> dict[str, dict[str, str]]:
    """name -> {"codepoints", "group", "sha256"} from manifest.json."""
    if not MANIFEST.is_file():
        raise _missing(f"sprite manifest {MANIFEST}")
    manifest: dict[str, dict[str, str]] = json.loads(MANIFEST.read_text())
    return manifest


def sprites_in_group(group: str) -> list[str]:
    """The sprites of ``group`` (e.g. "boat", "landbird", "dog_a"), sorted; UserError if there are none."""
    names = sorted(name for name, entry in load_manifest().items() if entry["group"] == group)
    if not names:
        groups = sorted({entry["group"] for entry in load_manifest().values()})
        raise UserError(f"no sprites in group {group!r}; groups: {', '.join(groups)}")
    return names


def load_sprite(name: str) -> Tensor:
    """The sprite ``name`` as a 4×h×w uint8 RGBA tensor (straight, not premultiplied, alpha)."""
    import numpy as np
    from PIL import Image

    path = SPRITE_DIR / f"{name}.png"
    if not path.is_file():
        raise _missing(f"sprite {name}")
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGBA")).copy()
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _premultiply(rgba: Tensor) -> Tensor:
    """RGBA (…×4×h×w, straight alpha) -> colour × alpha, alpha."""
    return torch.cat([rgba[:, :3] * rgba[:, 3:], rgba[:, 3:]], dim=1)


def _unpremultiply(prem: Tensor) -> tuple[Tensor, Tensor]:
    """Premultiplied RGBA -> (straight colour, alpha), both clamped to [0, 1]; colour 0 where alpha is 0."""
    alpha = prem[:, 3:].clamp(0.0, 1.0)
    rgb = prem[:, :3].clamp(min=0.0) / alpha.clamp(min=_EPS)
    return torch.where(alpha > 0, rgb.clamp(max=1.0), torch.zeros_like(rgb)), alpha


def _square(sprite: Tensor) -> Tensor:
    """Pad a 4×h×w sprite with transparent pixels to a centred max(h, w) square."""
    h, w = sprite.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return F.pad(sprite, (left, side - w - left, top, side - h - top))


def load_sprite_bank(names: Sequence[str], size: int) -> Tensor:
    """K×4×size×size float32 RGBA in [0, 1] (straight alpha): each sprite padded to a centred square and resized
    to size×size (bicubic, antialiased, on premultiplied colour so no dark fringes). Row k is ``names[k]``."""
    if not names:
        raise ValueError("load_sprite_bank needs at least one sprite name")
    squares = []
    for name in names:
        sprite = _square(load_sprite(name).float().div(255.0)).unsqueeze(0)
        prem = F.interpolate(_premultiply(sprite), size=(size, size), mode="bicubic", antialias=True,
                             align_corners=False)
        rgb, alpha = _unpremultiply(prem)
        squares.append(torch.cat([rgb, alpha], dim=1))
    return torch.cat(squares)


def placement_matrices(scale: Tensor, centre: Tensor, angle: Tensor, flip: Tensor) -> Tensor:
    """N×2×3 ``affine_grid`` matrices taking canvas coordinates p to sprite coordinates q = A (p − centre) with
    A = diag(±1, 1) · R(angle)ᵀ / scale (see the module docstring for the convention)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    fx = 1.0 - 2.0 * flip.to(angle.dtype)
    inv = 1.0 / scale
    a = torch.stack([torch.stack([fx * cos, -fx * sin], -1), torch.stack([sin, cos], -1)], -2) * inv[:, None, None]
    shift = -(a @ centre.to(angle.dtype).unsqueeze(-1))
    return torch.cat([a, shift], dim=-1)


def place_sprites(bank: Tensor, which: Tensor, size: int, *, scale: Tensor, centre: Tensor, angle: Tensor,
                  flip: Tensor) -> tuple[Tensor, Tensor]:
    """Render N sprites onto transparent size×size canvases in one batched ``grid_sample``.

    ``bank``: K×4×B×B straight RGBA from ``load_sprite_bank`` (choose B near max(scale) × size, sampling is
    bilinear without prefiltering). ``which``: (N,) long rows of the bank. ``scale``: (N,) sprite side as a
    fraction of the canvas side. ``centre``: (N, 2) sprite centre (x, y) in [-1, 1]. ``angle``: (N,) radians,
    counter-clockwise as displayed. ``flip``: (N,) bool, mirror left-right. Returns (rgb N×3×size×size straight
    colour, alpha N×1×size×size), both in [0, 1] on ``bank``'s device; rgb is 0 where alpha is 0.
    """
    device, dtype = bank.device, bank.dtype
    theta = placement_matrices(scale.to(device, dtype), centre.to(device, dtype), angle.to(device, dtype),
                               flip.to(device))
    source = _premultiply(bank[which.to(device)])
    grid = F.affine_grid(theta, [source.shape[0], 4, size, size], align_corners=False)
    prem = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _unpremultiply(prem)


def composite(background: Tensor, rgb: Tensor, alpha: Tensor) -> Tensor:
    """Paste straight-alpha ``rgb`` over ``background``: background × (1 − alpha) + rgb × alpha."""
    return background * (1.0 - alpha) + rgb * alpha


def random_placements(n: int, gen: torch.Generator, *, scale_range: tuple[float, float] = (0.45, 0.75),
                      max_shift: float = 0.25, max_angle_deg: float = 15.0, flip: bool = True) -> dict[str, Tensor]:
    """Random keyword arguments for ``place_sprites`` (scale, centre, angle, flip), drawn on the CPU generator
    ``gen`` so every device gets the same data: scale uniform in ``scale_range``, centre uniform in
    [-max_shift, max_shift]², angle uniform in ±max_angle_deg (as radians), flip a fair coin (never if not flip).
    All four are drawn whatever the options, so the generator advances by the same amount."""
    lo, hi = scale_range
    scale = lo + (hi - lo) * torch.rand(n, generator=gen)
    centre = max_shift * (2.0 * torch.rand(n, 2, generator=gen) - 1.0)
    angle = math.radians(max_angle_deg) * (2.0 * torch.rand(n, generator=gen) - 1.0)
    flips = torch.rand(n, generator=gen) < 0.5
    return {"scale": scale, "centre": centre, "angle": angle, "flip": flips & flip}


def _grey(rgb: Tensor) -> Tensor:
    """ITU-R 601 luma, N×1×H×W."""
    r, g, b = rgb.unbind(dim=1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def jitter_colour(rgb: Tensor, gen: torch.Generator, strength: float, *, weight: Tensor | None = None) -> Tensor:
    """Per-image brightness, contrast and saturation jitter of N×3×H×W ``rgb`` in [0, 1], each factor uniform in
    [1 − strength, 1 + strength], drawn on the CPU generator ``gen`` (N×3 draws) and applied on rgb's device.
    Contrast pivots on the image's mean grey, weighted by ``weight`` (N×1×H×W, e.g. a sprite's alpha) if given."""
    n = rgb.shape[0]
    factors = (1.0 + strength * (2.0 * torch.rand(n, 3, generator=gen) - 1.0)).to(rgb.device, rgb.dtype)
    brightness, contrast, saturation = (factors[:, i, None, None, None] for i in range(3))
    out = (rgb * brightness).clamp(0.0, 1.0)
    w = torch.ones_like(out[:, :1]) if weight is None else weight
    mean = (_grey(out) * w).sum(dim=(1, 2, 3), keepdim=True) / w.sum(dim=(1, 2, 3), keepdim=True).clamp(min=_EPS)
    out = ((out - mean) * contrast + mean).clamp(0.0, 1.0)
    grey = _grey(out)
    return ((out - grey) * saturation + grey).clamp(0.0, 1.0)
