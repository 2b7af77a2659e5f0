"""Procedural scene backgrounds standing in for Places categories (COCO-on-Places-style datasets).

Each category is a fixed texture family (a palette of 2-4 colours composed from a few vectorised pattern
primitives: oriented stripes and waves, window grids, dot lattices, smooth value noise, horizon bands,
diagonal steps); per image only phases, offsets, horizon heights, frequencies and colours jitter a little.
All randomness is drawn on a CPU ``torch.Generator`` and the pictures are computed on the target device, so
CPU and CUDA give the same images up to float rounding. Nothing is rendered at import time.

Image frame: x in [0, 1] left to right, y in [0, 1] top to bottom (pixel centres).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

SCENE_CATEGORIES: tuple[str, ...] = (
    "beach", "canyon", "building_facade", "staircase", "sand_desert", "crevasse", "bamboo_forest",
    "broadleaf_forest", "ball_pit", "kasbah", "lighthouse", "pagoda", "rock_arch", "oast_house", "orchard",
    "viaduct", "water_tower", "waterfall", "zen_garden", "ocean", "lake", "grass_field",
)

RGB = tuple[float, float, float]
Num = Tensor | float  # a scalar, or one value per image shaped n×1×1×1


class _Ctx:
    """One batch of n images of one category: the pixel grid on ``device`` and draws from the CPU ``gen``."""

    def __init__(self, n: int, size: int, device: torch.device, gen: torch.Generator) -> None:
        self.n, self.size, self.device, self.gen = n, size, device, gen
        axis = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
        self.x = axis.view(1, 1, 1, size)
        self.y = axis.view(1, 1, size, 1)
        self.px = 1.0 / size  # one pixel, the width of soft edges

    def rand(self, *shape: int) -> Tensor:
        """Uniform [0, 1) of shape (n, *shape), drawn on the CPU generator, moved to the device."""
        return torch.rand((self.n, *shape), generator=self.gen).to(self.device)

    def uniform(self, lo: float, hi: float) -> Tensor:
        """One uniform value in [lo, hi) per image, shaped n×1×1×1 for broadcasting."""
        return lo + (hi - lo) * self.rand(1, 1, 1)

    def colour(self, rgb: RGB, jitter: float = 0.04) -> Tensor:
        """The palette colour ``rgb`` with a small per-image jitter (mostly brightness, a little hue), n×3×1×1."""
        base = torch.tensor(rgb, device=self.device).view(1, 3, 1, 1)
        shift = 2.0 * self.rand(4, 1, 1) - 1.0
        return base + jitter * (shift[:, :1] + shift[:, 1:] / 3.0)

    def noise(self, cells: int | tuple[int, int], octaves: int = 3) -> Tensor:
        """Smooth value noise in [0, 1], n×1×S×S: random grids of cells, 2·cells, … upsampled bicubically and
        summed with halving weights, then stretched so its spread is about that of a uniform variable."""
        cy, cx = (cells, cells) if isinstance(cells, int) else cells
        total = torch.zeros(self.n, 1, self.size, self.size, device=self.device)
        for k in range(octaves):
            grid = self.rand(1, cy * 2**k, cx * 2**k)
            total = total + 0.5**k * F.interpolate(grid, size=(self.size, self.size), mode="bicubic",
                                                   align_corners=False)
        norm = sum(0.5**k for k in range(octaves))
        return (0.5 + 2.0 * (total / norm - 0.5)).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- primitives


def _ramp(d: Tensor, width: Num) -> Tensor:
    """Soft step: 0 for d <= -width/2, 1 for d >= width/2, linear between (antialiased, continuous edges)."""
    return (d / width + 0.5).clamp(0.0, 1.0)


def _mix(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """a where t = 0, b where t = 1, linear between; broadcasts colours n×3×1×1 or images with t n×1×H×W."""
    return a + (b - a) * t


def _frac_dist(t: Tensor) -> Tensor:
    """Distance from t to the nearest integer, in [0, 0.5] (a continuous triangle wave of period 1)."""
    return (t - torch.round(t)).abs()


def _rotated(c: _Ctx, angle: Tensor) -> Tensor:
    """Coordinate along direction ``angle`` (radians, 0 = +x, pi/2 = +y) through the image centre."""
    return (c.x - 0.5) * torch.cos(angle) + (c.y - 0.5) * torch.sin(angle)


def _waves(u: Tensor, freq: Num, phase: Num) -> Tensor:
    """Smooth sinusoidal stripes in [0, 1] along coordinate u."""
    return 0.5 + 0.5 * torch.cos(2.0 * math.pi * freq * u + phase)


def _stripes(c: _Ctx, u: Tensor, freq: Num, offset: Num, duty: float) -> Tensor:
    """Hard-edged (antialiased) stripes along u: 1 on a fraction ``duty`` of each period."""
    return _ramp(duty / 2 - _frac_dist(freq * u + offset), c.px * freq)


def _grid(c: _Ctx, freq: tuple[Tensor, Tensor], offset: tuple[Tensor, Tensor], half: tuple[float, float]) -> Tensor:
    """Lattice of rectangles (windows): 1 within ``half`` (x, y) cell units of each cell centre."""
    inside_x = _ramp(half[0] - _frac_dist(c.x * freq[0] + offset[0]), c.px * freq[0])
    inside_y = _ramp(half[1] - _frac_dist(c.y * freq[1] + offset[1]), c.px * freq[1])
    return inside_x * inside_y


def _dots(c: _Ctx, freq: Tensor, offset: tuple[Tensor, Tensor], radius: float) -> Tensor:
    """Lattice of discs of ``radius`` cell units (square lattice, ``freq`` cells across the image)."""
    dx = _frac_dist(c.x * freq + offset[0])
    dy = _frac_dist(c.y * freq + offset[1])
    return _ramp(radius - torch.sqrt(dx**2 + dy**2), c.px * freq)


def _cell_hash(c: _Ctx, freq: Tensor, offset: tuple[Tensor, Tensor], seed: Tensor, modulus: int) -> Tensor:
    """An integer in [0, modulus) per lattice cell of ``_dots`` (pseudo-random, seeded per image), n×H×W."""
    ix = torch.round(c.x * freq + offset[0]).long()
    iy = torch.round(c.y * freq + offset[1]).long()
    h = (ix * 73856093) ^ (iy * 19349663) ^ seed.long()
    h = (h * 2654435761) % 4294967291
    return (h % modulus).squeeze(1)


def _below(c: _Ctx, height: Tensor | float) -> Tensor:
    """1 below the horizon ``height`` (y grows downwards), soft-edged."""
    return _ramp(c.y - height, c.px)


def _soft_floor(t: Tensor, width: Num) -> Tensor:
    """floor(t) with the unit jump spread over the last ``width`` of each period (continuous)."""
    base = torch.floor(t)
    return base + ((t - base - 1.0 + width) / width).clamp(0.0, 1.0)


def _steps(c: _Ctx, freq: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
    """Parallel staircases descending to the right, ``freq`` steps across the image. Returns (body, tread):
    body is 1 on the stairs and 0 on the wall between staircases; tread is 1 on the top face of each step."""
    s = c.x * freq + offset
    t = c.y * freq
    profile = t - _soft_floor(s, c.px * freq)  # height above the step edge of this column
    period = 3.0
    body = _ramp(_frac_dist(profile / period) - 0.25, c.px * freq / period)
    tread = _ramp(0.35 - (profile - period * torch.round(profile / period)).abs(), c.px * freq)
    return body, tread


def _palette_image(palette: Tensor, index: Tensor) -> Tensor:
    """Colours palette[index] as n×3×H×W from a P×3 palette and n×H×W indices."""
    return palette[index].permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------------- families


def _sky(c: _Ctx, top: RGB = (0.45, 0.68, 0.92), bottom: RGB = (0.78, 0.87, 0.96)) -> Tensor:
    """A vertical sky gradient."""
    return _mix(c.colour(top), c.colour(bottom), c.y.clamp(0.0, 1.0))


def _beach(c: _Ctx) -> Tensor:
    """Sky, a blue sea band with faint swell, a foam line and noisy sand."""
    img = _sky(c)
    sea = _mix(c.colour((0.05, 0.36, 0.62)), c.colour((0.12, 0.52, 0.72)),
               _waves(c.y, c.uniform(18.0, 24.0), c.uniform(0.0, 6.3)))
    img = _mix(img, sea, _below(c, c.uniform(0.22, 0.32)))
    shore = c.uniform(0.52, 0.6) + 0.025 * torch.sin(2 * math.pi * c.uniform(1.5, 3.0) * c.x + c.uniform(0.0, 6.3))
    img = _mix(img, c.colour((0.95, 0.97, 0.98)), _below(c, shore - 0.02))
    sand = _mix(c.colour((0.80, 0.68, 0.46)), c.colour((0.95, 0.86, 0.64)), c.noise(16))
    return _mix(img, sand, _below(c, shore))


def _canyon(c: _Ctx) -> Tensor:
    """Layered red rock strata (wavy horizontal bands) under a jagged strip of sky."""
    strata = _waves(c.y + 0.06 * c.noise(3, 2), c.uniform(7.0, 9.0), c.uniform(0.0, 6.3))
    rock = _mix(c.colour((0.55, 0.22, 0.12)), c.colour((0.88, 0.52, 0.28)), strata)
    rock = rock * (0.75 + 0.35 * c.noise(8))
    ridge = c.uniform(0.12, 0.2) + 0.12 * (c.noise((1, 6), 2) - 0.5)
    return _mix(_sky(c), rock, _below(c, ridge))


def _building_facade(c: _Ctx) -> Tensor:
    """A beige wall with a regular grid of dark glass windows."""
    fx, fy = c.uniform(4.0, 5.0), c.uniform(5.0, 6.0)
    windows = _grid(c, (fx, fy), (c.uniform(0.0, 1.0), c.uniform(0.0, 1.0)), (0.3, 0.3))
    wall = c.colour((0.80, 0.70, 0.56)) * (0.92 + 0.1 * c.noise(16, 2))
    glass = _mix(c.colour((0.12, 0.20, 0.34)), c.colour((0.45, 0.58, 0.70)), _waves(c.x + c.y, fx, c.uniform(0, 6.3)))
    return _mix(wall, glass, windows)


def _staircase(c: _Ctx) -> Tensor:
    """Grey stone staircases descending diagonally: pale treads, darker risers, shadowed wall."""
    body, tread = _steps(c, c.uniform(7.0, 9.0), c.uniform(0.0, 3.0))
    stairs = _mix(c.colour((0.42, 0.40, 0.38)), c.colour((0.80, 0.78, 0.74)), tread)
    wall = c.colour((0.25, 0.24, 0.24)) * (0.9 + 0.2 * c.noise(8, 2))
    return _mix(wall, stairs, body)


def _sand_desert(c: _Ctx) -> Tensor:
    """Pale sky over golden dunes: low-frequency oblique smooth waves with shadowed slopes."""
    u = _rotated(c, c.uniform(-0.45, -0.25)) + 0.05 * c.noise(2, 2)
    dunes = _mix(c.colour((0.72, 0.45, 0.20)), c.colour((0.96, 0.76, 0.44)), _waves(u, c.uniform(2.5, 3.5),
                                                                                     c.uniform(0.0, 6.3)) ** 0.6)
    horizon = c.uniform(0.15, 0.25) + 0.06 * (c.noise((1, 3), 1) - 0.5)
    return _mix(_sky(c, (0.62, 0.76, 0.90), (0.88, 0.88, 0.85)), dunes, _below(c, horizon))


def _crevasse(c: _Ctx) -> Tensor:
    """Snow and blue ice split by a dark, meandering vertical crack."""
    ice = _mix(c.colour((0.70, 0.82, 0.92)), c.colour((0.95, 0.97, 1.0)), c.noise(6))
    centre = c.uniform(0.4, 0.6) + 0.25 * (c.noise((4, 1), 2) - 0.5)
    half = c.uniform(0.05, 0.09)
    depth = (1.0 - (c.x - centre).abs() / half).clamp(0.0, 1.0)
    crack = _mix(c.colour((0.35, 0.60, 0.78)), c.colour((0.04, 0.12, 0.30)), depth)
    return _mix(ice, crack, _ramp(half - (c.x - centre).abs(), c.px))


def _bamboo_forest(c: _Ctx) -> Tensor:
    """Green bamboo culms (near-vertical stripes of two widths) with dark nodes on a shaded background."""
    u = _rotated(c, c.uniform(-0.06, 0.06))
    back = c.colour((0.10, 0.22, 0.08)) * (0.8 + 0.4 * c.noise((2, 8), 2))
    far = _stripes(c, u, c.uniform(10.0, 12.0), c.uniform(0.0, 1.0), 0.35)
    near = _stripes(c, u, c.uniform(4.0, 5.0), c.uniform(0.0, 1.0), 0.4)
    shade = 0.8 + 0.2 * _waves(u, 4.5, 0.0)
    img = _mix(back, c.colour((0.35, 0.55, 0.16)) * shade, far)
    img = _mix(img, c.colour((0.55, 0.75, 0.25)) * shade, near)
    nodes = _stripes(c, c.y, c.uniform(3.0, 4.0), c.uniform(0.0, 1.0), 0.06)
    return img * (1.0 - 0.5 * nodes * torch.maximum(far, near))


def _broadleaf_forest(c: _Ctx) -> Tensor:
    """Leafy canopy: multi-octave noise mapped to three greens."""
    leaves = c.noise(6, 4)
    img = _mix(c.colour((0.06, 0.18, 0.05)), c.colour((0.22, 0.42, 0.10)), _ramp(leaves - 0.4, 0.15))
    return _mix(img, c.colour((0.55, 0.70, 0.22)), _ramp(leaves - 0.7, 0.1))


def _ball_pit(c: _Ctx) -> Tensor:
    """Densely packed red, yellow, blue, green and orange balls on a dark floor."""
    freq = c.uniform(7.0, 9.0)
    offset = (c.uniform(0.0, 1.0), c.uniform(0.0, 1.0))
    palette = torch.tensor([(0.90, 0.12, 0.12), (0.98, 0.85, 0.10), (0.10, 0.35, 0.90), (0.15, 0.72, 0.25),
                            (0.98, 0.50, 0.08)], device=c.device)
    seed = torch.randint(0, 2**30, (c.n, 1, 1, 1), generator=c.gen).to(c.device)
    balls = _palette_image(palette, _cell_hash(c, freq, offset, seed, len(palette)))
    dx, dy = _frac_dist(c.x * freq + offset[0]), _frac_dist(c.y * freq + offset[1])
    highlight = 1.0 + 0.35 * _ramp(0.15 - torch.sqrt((dx - 0.12) ** 2 + (dy - 0.12) ** 2), 0.1)
    return _mix(c.colour((0.12, 0.10, 0.14)), balls * highlight, _dots(c, freq, offset, 0.46))


def _kasbah(c: _Ctx) -> Tensor:
    """Mud-brick walls with crenellated tops and small dark windows under a deep blue sky."""
    fx = c.uniform(5.0, 7.0)
    merlons = _stripes(c, c.x, fx * 1.5, c.uniform(0.0, 1.0), 0.5)
    top = c.uniform(0.2, 0.3) - 0.05 * merlons
    wall = _mix(c.colour((0.60, 0.36, 0.20)), c.colour((0.82, 0.58, 0.36)), c.noise(10, 3))
    windows = _grid(c, (fx, c.uniform(4.0, 5.0)), (c.uniform(0.0, 1.0), c.uniform(0.0, 1.0)), (0.1, 0.16))
    wall = _mix(wall, c.colour((0.18, 0.10, 0.06)), windows * _below(c, top + 0.08))
    return _mix(_sky(c, (0.15, 0.35, 0.80), (0.40, 0.60, 0.90)), wall, _below(c, top))


def _lighthouse(c: _Ctx) -> Tensor:
    """A tapered red-and-white striped tower standing out of the sea against the sky."""
    img = _sky(c)
    img = _mix(img, c.colour((0.10, 0.30, 0.55)), _below(c, c.uniform(0.72, 0.8)))
    centre, top = c.uniform(0.4, 0.6), c.uniform(0.12, 0.2)
    half = 0.07 + 0.06 * c.y
    tower = _ramp(half - (c.x - centre).abs(), c.px) * _below(c, top)
    bands = _stripes(c, c.y, c.uniform(5.0, 6.0), c.uniform(0.0, 1.0), 0.5)
    body = _mix(c.colour((0.95, 0.95, 0.93)), c.colour((0.80, 0.10, 0.10)), bands)
    lamp = _ramp(0.05 - (c.x - centre).abs(), c.px) * _below(c, top - 0.08) * (1.0 - _below(c, top))
    img = _mix(img, c.colour((0.98, 0.90, 0.40)), lamp)
    return _mix(img, body, tower)


def _pagoda(c: _Ctx) -> Tensor:
    """A tiered pagoda against a hazy sky: red storeys under wide dark roofs with upturned eaves, narrowing
    upwards, topped by a spire."""
    centre, tiers = c.uniform(0.44, 0.56), c.uniform(4.0, 5.0)
    dx = (c.x - centre).abs()
    half = 0.06 + 0.22 * c.y  # storey half-width
    level = (c.y - 0.12) * tiers + c.uniform(0.0, 0.3)
    p = level - _soft_floor(level, c.px * tiers)  # position within a tier: 0 at a roof's ridge, 1 at its base
    below_top = _below(c, 0.12)
    roof = _ramp(0.4 - 0.5 * (dx - half).clamp(min=0.0) * tiers - p, c.px * tiers) \
        * _ramp(half + 0.02 + 0.25 * p - dx, c.px) * below_top
    storey = _ramp(0.8 * half - dx, c.px) * below_top
    spire = _ramp(0.012 - dx, c.px) * _below(c, 0.02)
    img = _sky(c, (0.70, 0.76, 0.82), (0.92, 0.88, 0.80))
    img = _mix(img, c.colour((0.70, 0.16, 0.10)), storey)
    return _mix(img, c.colour((0.18, 0.16, 0.16)), (roof + spire * (1.0 - storey)).clamp(0.0, 1.0))


def _rock_arch(c: _Ctx) -> Tensor:
    """A red sandstone arch: rock with a large elliptical opening showing the sky."""
    rock = _mix(c.colour((0.58, 0.26, 0.14)), c.colour((0.85, 0.48, 0.28)), c.noise(6, 3))
    cx, cy = c.uniform(0.4, 0.6), c.uniform(0.75, 0.85)
    rx, ry = c.uniform(0.25, 0.32), c.uniform(0.45, 0.55)
    hole = _ramp(1.0 - torch.sqrt(((c.x - cx) / rx) ** 2 + ((c.y - cy) / ry) ** 2), c.px * 3)
    top = c.uniform(0.08, 0.16) + 0.08 * (c.noise((1, 5), 2) - 0.5)
    solid = _below(c, top) * (1.0 - hole)
    return _mix(_sky(c), rock, solid)


def _oast_house(c: _Ctx) -> Tensor:
    """A round brick kiln with a conical roof and white cowl, on grass under the sky."""
    centre = c.uniform(0.42, 0.58)
    dx = (c.x - centre).abs()
    img = _mix(_sky(c), c.colour((0.30, 0.55, 0.18)), _below(c, c.uniform(0.8, 0.86)))
    bricks = _stripes(c, c.y, 24.0, 0.0, 0.85)
    kiln = _ramp(0.22 - dx, c.px) * _below(c, 0.5) * (1.0 - _below(c, 0.83))
    img = _mix(img, c.colour((0.62, 0.26, 0.16)) * (0.7 + 0.3 * bricks), kiln)
    cone = _ramp(0.22 * (c.y - 0.18) / 0.32 - dx, c.px) * _below(c, 0.18) * (1.0 - _below(c, 0.5))
    img = _mix(img, c.colour((0.40, 0.20, 0.14)), cone)
    cowl = _ramp(0.045 - dx, c.px) * _below(c, 0.06) * (1.0 - _below(c, 0.2))
    return _mix(img, c.colour((0.96, 0.96, 0.93)), cowl)


def _orchard(c: _Ctx) -> Tensor:
    """Rows of round dark-green tree crowns dotted with red fruit on a light green meadow."""
    freq = c.uniform(3.5, 4.5)
    offset = (c.uniform(0.0, 1.0), c.uniform(0.0, 1.0))
    crowns = _dots(c, freq, offset, 0.36)
    grass = c.colour((0.56, 0.70, 0.30)) * (0.9 + 0.2 * c.noise(12, 2))
    leaves = c.colour((0.12, 0.36, 0.10)) * (0.75 + 0.5 * c.noise(16, 2))
    img = _mix(grass, leaves, crowns)
    fruit_freq = freq * 4.0
    fruit = _dots(c, fruit_freq, (c.uniform(0.0, 1.0), c.uniform(0.0, 1.0)), 0.2)
    return _mix(img, c.colour((0.88, 0.12, 0.08)), fruit * _ramp(crowns - 0.99, 0.02))


def _viaduct(c: _Ctx) -> Tensor:
    """A stone bridge of repeated round arches crossing a green valley."""
    img = _mix(_sky(c), c.colour((0.28, 0.48, 0.18)), _below(c, c.uniform(0.6, 0.7)))
    deck, base = c.uniform(0.2, 0.3), c.uniform(0.82, 0.9)
    freq = c.uniform(3.0, 4.0)
    ax = _frac_dist(c.x * freq + c.uniform(0.0, 1.0)) / freq  # horizontal distance to the nearest arch axis
    spring = deck + 0.25
    arch = _ramp(0.36 / freq - torch.sqrt(ax**2 + (torch.clamp(spring - c.y, min=0.0)) ** 2), c.px)
    bridge = _below(c, deck) * (1.0 - _below(c, base)) * (1.0 - arch)
    stone = c.colour((0.66, 0.58, 0.46)) * (0.85 + 0.25 * c.noise(12, 2))
    return _mix(img, stone, bridge)


def _water_tower(c: _Ctx) -> Tensor:
    """A cylindrical metal tank with a conical cap on four thin legs, over a dry ground strip."""
    centre = c.uniform(0.42, 0.58)
    dx = c.x - centre
    img = _mix(_sky(c), c.colour((0.55, 0.50, 0.35)), _below(c, c.uniform(0.88, 0.93)))
    legs = torch.stack([_ramp(0.012 - (dx - off).abs(), c.px) for off in (-0.19, -0.07, 0.07, 0.19)]).sum(0)
    img = _mix(img, c.colour((0.25, 0.25, 0.27)), legs.clamp(0.0, 1.0) * _below(c, 0.45))
    shading = 0.65 + 0.45 * torch.cos(dx / 0.24 * math.pi / 2).clamp(min=0.0)
    tank = _ramp(0.22 - dx.abs(), c.px) * _below(c, 0.2) * (1.0 - _below(c, 0.48))
    img = _mix(img, c.colour((0.62, 0.64, 0.68)) * shading, tank)
    cap = _ramp(0.24 * (c.y - 0.08) / 0.12 - dx.abs(), c.px) * _below(c, 0.08) * (1.0 - _below(c, 0.2))
    return _mix(img, c.colour((0.35, 0.36, 0.40)), cap)


def _waterfall(c: _Ctx) -> Tensor:
    """White vertical water streaks falling between dark mossy rock into foam."""
    rock = _mix(c.colour((0.14, 0.13, 0.11)), c.colour((0.28, 0.34, 0.18)), c.noise(8, 3))
    centre, half = c.uniform(0.4, 0.6), c.uniform(0.18, 0.26)
    edge = half + 0.04 * (c.noise((3, 1), 2) - 0.5)
    water_mask = _ramp(edge - (c.x - centre).abs(), c.px * 2)
    streaks = c.noise((2, 24), 2)
    water = _mix(c.colour((0.50, 0.64, 0.74)), c.colour((0.94, 0.97, 1.0)), streaks)
    img = _mix(rock, water, water_mask)
    foam = _below(c, c.uniform(0.78, 0.86) + 0.05 * (c.noise((1, 6), 2) - 0.5))
    return _mix(img, c.colour((0.92, 0.95, 0.97)) * (0.9 + 0.1 * c.noise(12, 2)), foam)


def _zen_garden(c: _Ctx) -> Tensor:
    """Raked pale gravel: straight parallel grooves and concentric rings around a dark stone."""
    cx, cy = c.uniform(0.3, 0.7), c.uniform(0.3, 0.7)
    r = torch.sqrt((c.x - cx) ** 2 + (c.y - cy) ** 2)
    freq = c.uniform(20.0, 24.0)
    rings = _waves(r, freq, 0.0)
    lines = _waves(c.y, freq, c.uniform(0.0, 6.3))
    near = _ramp(0.32 - r, 0.04)
    grooves = _mix(lines, rings, near)
    img = c.colour((0.86, 0.83, 0.76)) * (0.8 + 0.2 * grooves)
    radius = c.uniform(0.08, 0.12)
    stone = c.colour((0.32, 0.32, 0.30)) * (0.8 + 0.3 * c.noise(8, 2))
    return _mix(img, stone, _ramp(radius - r, c.px))


def _ocean(c: _Ctx) -> Tensor:
    """Open water to the edges: deep blue swell with lighter crests and a few whitecaps."""
    u = c.y + 0.04 * torch.sin(2 * math.pi * c.uniform(2.0, 3.0) * c.x + c.uniform(0.0, 6.3)) + 0.05 * c.noise(4, 2)
    swell = _waves(u, c.uniform(10.0, 13.0), c.uniform(0.0, 6.3))
    img = _mix(c.colour((0.02, 0.16, 0.38)), c.colour((0.10, 0.42, 0.66)), swell)
    caps = _ramp(swell - 0.93, 0.04) * _ramp(c.noise(8, 2) - 0.55, 0.1)
    return _mix(img, c.colour((0.92, 0.95, 0.98)), caps)


def _lake(c: _Ctx) -> Tensor:
    """Calm grey-blue water with faint ripples below a dark tree line and a pale sky."""
    shore = c.uniform(0.32, 0.4)
    treetop = shore - 0.06 - 0.08 * c.noise((1, 12), 2)
    img = _sky(c, (0.70, 0.80, 0.90), (0.88, 0.90, 0.92))
    img = _mix(img, c.colour((0.12, 0.24, 0.12)), _below(c, treetop))
    ripples = _waves(c.y + 0.01 * c.noise((1, 8), 1), c.uniform(20.0, 26.0), c.uniform(0.0, 6.3))
    water = _mix(c.colour((0.34, 0.46, 0.54)), c.colour((0.50, 0.60, 0.68)), 0.6 * ripples + 0.4 * (c.y - shore))
    return _mix(img, water, _below(c, shore))


def _grass_field(c: _Ctx) -> Tensor:
    """A green meadow of fine vertical grass blades up to a low horizon with a pale sky."""
    blades = c.noise((3, 48), 2)
    grass = _mix(c.colour((0.22, 0.42, 0.08)), c.colour((0.55, 0.76, 0.22)), blades)
    grass = grass * (0.8 + 0.25 * c.y)
    return _mix(_sky(c, (0.55, 0.72, 0.92), (0.85, 0.90, 0.95)), grass, _below(c, c.uniform(0.22, 0.32)))


_RECIPES: dict[str, Callable[[_Ctx], Tensor]] = {
    "beach": _beach, "canyon": _canyon, "building_facade": _building_facade, "staircase": _staircase,
    "sand_desert": _sand_desert, "crevasse": _crevasse, "bamboo_forest": _bamboo_forest,
    "broadleaf_forest": _broadleaf_forest, "ball_pit": _ball_pit, "kasbah": _kasbah, "lighthouse": _lighthouse,
    "pagoda": _pagoda, "rock_arch": _rock_arch, "oast_house": _oast_house, "orchard": _orchard,
    "viaduct": _viaduct, "water_tower": _water_tower, "waterfall": _waterfall, "zen_garden": _zen_garden,
    "ocean": _ocean, "lake": _lake, "grass_field": _grass_field,
}
assert tuple(_RECIPES) == SCENE_CATEGORIES


def scene_index(name: str) -> int:
    """Index of scene category ``name`` in SCENE_CATEGORIES; ValueError naming the known ones otherwise."""
    try:
        return SCENE_CATEGORIES.index(name)
    except ValueError:
        raise ValueError(f"unknown scene category {name!r}; known: {', '.join(SCENE_CATEGORIES)}") from None


def render_scenes(categories: Tensor, size: int, gen: torch.Generator,
                  device: torch.device | str = "cpu") -> Tensor:
    """N×3×size×size float32 scenes in [0, 1] on ``device``; ``categories`` (N,) long indices into
    SCENE_CATEGORIES. Categories are rendered in increasing index order, each as one batch, drawing from the
    CPU generator ``gen``: the result depends only on (categories, size, generator state), on any device."""
    cats = categories.detach().to("cpu", torch.long).reshape(-1)
    bad = cats[(cats < 0) | (cats >= len(SCENE_CATEGORIES))]
    if bad.numel():
        raise ValueError(f"scene category indices must be in [0, {len(SCENE_CATEGORIES)}), got {bad[0].item()}")
    device = torch.device(device)
    out = torch.empty(cats.numel(), 3, size, size, device=device)
    for k in torch.unique(cats).tolist():
        index = torch.nonzero(cats == k).squeeze(1)
        ctx = _Ctx(int(index.numel()), size, device, gen)
        out[index.to(device)] = _RECIPES[SCENE_CATEGORIES[k]](ctx).clamp(0.0, 1.0)
    return out
