"""Image corruptions in the manner of CIFAR-10-C (Hendrycks & Dietterich 2019), batched in torch.

Each function maps N×3×H×W float images in [0, 1] (on any device) to corrupted ones at ``level`` 1..5.
Random parts (noise fields, displacements) are drawn on a CPU generator so that results do not depend on
the device. These are our own implementations of the corruption families of LfF's Corrupted CIFAR-10
(Type 0: snow, frost, fog, brightness, contrast, spatter, elastic, JPEG, pixelate, saturate); the level-5
constants follow CIFAR-10-C where they are known (brightness +0.3 on the HSV value, contrast 0.15,
JPEG quality 40, pixelate 0.65, fog (1.5, 1.75), frost 0.75 · image + 0.45 · texture), the rest are ours.
Snow, frost and spatter use procedural textures in place of CIFAR-10-C's image files and ImageMagick.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Corruption = Callable[[Tensor, int, torch.Generator], Tensor]


def _pick(level: int, table: tuple[float, ...]) -> float:
    if not 1 <= level <= 5:
        raise ValueError(f"corruption level must be in 1..5, got {level}")
    return table[level - 1]


def smooth_noise(n: int, size: int, cells: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """N×1×size×size noise in [0, 1], smooth at the scale of size/cells (a bicubically upsampled grid)."""
    grid = torch.rand(n, 1, cells, cells, generator=gen).to(device)
    field = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    low, high = field.amin((2, 3), keepdim=True), field.amax((2, 3), keepdim=True)
    return (field - low) / (high - low).clamp(min=1e-6)


def _value_scaled(x: Tensor, new_value: Callable[[Tensor], Tensor]) -> Tensor:
    """Change the HSV value (max channel) by ``new_value`` keeping hue and saturation."""
    value = x.amax(1, keepdim=True)
    return x * (new_value(value) / value.clamp(min=1e-6))


def _saturation_scaled(x: Tensor, factor: float, shift: float) -> Tensor:
    """Change the HSV saturation to clamp(s · factor + shift, 0, 1) keeping hue and value."""
    value = x.amax(1, keepdim=True)
    minimum = x.amin(1, keepdim=True)
    saturation = (value - minimum) / value.clamp(min=1e-6)
    new_saturation = (saturation * factor + shift).clamp(0, 1)
    chroma_unit = (value - x) / (value - minimum).clamp(min=1e-6)  # 0 at the max channel, 1 at the min
    return value - chroma_unit * new_saturation * value


def brightness(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    shift = _pick(level, (0.1, 0.15, 0.2, 0.25, 0.3))
    return _value_scaled(x, lambda v: (v + shift).clamp(max=1)).clamp(0, 1)


def contrast(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    factor = _pick(level, (0.75, 0.5, 0.4, 0.3, 0.15))
    mean = x.mean((2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def saturate(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    factor = _pick(level, (1.3, 1.6, 1.9, 2.2, 2.5))
    shift = _pick(level, (0.0, 0.05, 0.1, 0.15, 0.2))
    return _saturation_scaled(x, factor, shift).clamp(0, 1)


def pixelate(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    factor = _pick(level, (0.95, 0.9, 0.85, 0.75, 0.65))
    size = x.shape[-1]
    small = F.interpolate(x, size=max(1, round(size * factor)), mode="area")
    return F.interpolate(small, size=(size, size), mode="nearest")


def jpeg(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    """Real JPEG compression (Pillow's libjpeg) at quality 80 / 65 / 58 / 50 / 40, one image at a time."""
    import io

    import numpy as np
    from PIL import Image

    quality = int(_pick(level, (80, 65, 58, 50, 40)))
    pixels = x.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
    if not decoded:
        return x
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(x.device).float().div(255)


def fog(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    strength = _pick(level, (0.2, 0.5, 0.75, 1.0, 1.5))
    decay = _pick(level, (3.0, 3.0, 2.5, 2.0, 1.75))
    size = x.shape[-1]
    haze = 0.6 * smooth_noise(len(x), size, 4, gen, x.device) + 0.4 * smooth_noise(len(x), size, 8, gen, x.device)
    peak = x.amax((1, 2, 3), keepdim=True)
    fogged = x + strength * haze / decay
    return (fogged * peak / (peak + strength / decay)).clamp(0, 1)


def frost(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    image_weight = _pick(level, (1.0, 0.8, 0.7, 0.65, 0.75))
    frost_weight = _pick(level, (0.4, 0.6, 0.7, 0.7, 0.45))
    size = x.shape[-1]
    crystals = smooth_noise(len(x), size, max(4, size // 2), gen, x.device) ** 3
    veil = smooth_noise(len(x), size, 6, gen, x.device)
    texture = (0.55 * crystals + 0.45 * veil) * torch.tensor([0.85, 0.93, 1.0], device=x.device)[:, None, None]
    return (image_weight * x + frost_weight * texture).clamp(0, 1)


def snow(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    amount = _pick(level, (0.02, 0.03, 0.04, 0.05, 0.06))
    size = x.shape[-1]
    flakes = (torch.rand(len(x), 1, size, size, generator=gen) < amount).float().to(x.device)
    streaks = F.avg_pool2d(F.pad(flakes, (0, 0, 2, 2), mode="replicate"), (5, 1), stride=1)  # falling streaks
    grey = x.mean(1, keepdim=True)
    washed = 0.7 * x + 0.3 * torch.maximum(x, grey * 1.5 + 0.5)
    return (washed + 0.8 * streaks).clamp(0, 1)


def spatter(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    coverage = _pick(level, (0.62, 0.6, 0.58, 0.55, 0.52))  # threshold on smooth noise: lower = more mud
    size = x.shape[-1]
    field = smooth_noise(len(x), size, max(3, size // 5), gen, x.device)
    blots = ((field - coverage) / 0.05).clamp(0, 1)
    mud = torch.tensor([0.38, 0.26, 0.14], device=x.device)[:, None, None]
    return (x * (1 - 0.85 * blots) + 0.85 * blots * mud).clamp(0, 1)


def elastic(x: Tensor, level: int, gen: torch.Generator) -> Tensor:
    """A smooth random displacement field (grid_sample), amplitude in fractions of the image side."""
    amplitude = _pick(level, (0.02, 0.03, 0.04, 0.05, 0.06))
    size, n = x.shape[-1], len(x)
    displacement = torch.stack([smooth_noise(n, size, 4, gen, x.device)[:, 0],
                                smooth_noise(n, size, 4, gen, x.device)[:, 0]], -1) * 2 - 1
    identity = F.affine_grid(torch.eye(2, 3, device=x.device).expand(n, 2, 3), [n, 3, size, size],
                             align_corners=False)
    return F.grid_sample(x, identity + 2 * amplitude * displacement, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


LFF_TYPE0: dict[str, Corruption] = {
    "snow": snow, "frost": frost, "fog": fog, "brightness": brightness, "contrast": contrast,
    "spatter": spatter, "elastic": elastic, "jpeg": jpeg, "pixelate": pixelate, "saturate": saturate,
}  # bias id k = the k-th corruption = the corruption aligned with class k (LfF's Type 0 order)


def corrupt(images: Tensor, bias: Tensor, level: int, gen: torch.Generator) -> Tensor:
    """Apply corruption ``bias[i]`` (index into LFF_TYPE0) to image i; float images in [0, 1]."""
    out = images.clone()
    for k, function in enumerate(LFF_TYPE0.values()):
        members = (bias == k).nonzero().flatten()
        if len(members):
            out[members.to(images.device)] = function(images[members.to(images.device)], level, gen)
    return out
