"""Training-time data augmentation, on the device, inside the step's batch (no host sync, fixed shapes).

An augmentation draws its random parameters once per sample and applies them to every spatial tensor of the
batch (the image views and a mask), so a teacher sees the same crop as its student and a mask stays on its
object. Selected per method with the ``augment`` hyper-parameter (``none`` by default)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch

SPATIAL_FIELDS = ("x", "x_debiased", "mask")


def crop_flip_params(batch: int, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample: a crop offset in [0, 2p] for p = ⌊size/8⌋ (rows, columns) and a horizontal flip (p = ½)."""
    pad_h, pad_w = max(1, height // 8), max(1, width // 8)
    rows = torch.randint(0, 2 * pad_h + 1, (batch,), device=device)
    cols = torch.randint(0, 2 * pad_w + 1, (batch,), device=device)
    flip = torch.rand(batch, device=device) < 0.5
    return rows, cols, flip


def crop_flip(images: Tensor, rows: Tensor, cols: Tensor, flip: Tensor) -> Tensor:
    """Random crop of the size of ``images`` from a reflection-padded copy (padding ⌊size/8⌋) at the given
    offsets, then a horizontal flip where ``flip``: the standard CIFAR-style "random crop + flip"."""
    b, _, h, w = images.shape
    pad_h, pad_w = max(1, h // 8), max(1, w // 8)
    padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    r = rows[:, None] + torch.arange(h, device=images.device)  # B×H source rows
    c = cols[:, None] + torch.arange(w, device=images.device)  # B×W source columns
    c = torch.where(flip[:, None], c.flip(1), c)
    sample = torch.arange(b, device=images.device)[:, None, None]
    return padded[sample, :, r[:, :, None], c[:, None, :]].permute(0, 3, 1, 2)


def augment_crop_flip(batch: Batch) -> Batch:
    tensors = batch.tensors()
    x = tensors["x"]
    assert x is not None
    params = crop_flip_params(x.shape[0], x.shape[2], x.shape[3], x.device)
    changed = {k: crop_flip(v, *params) for k, v in tensors.items()
               if k in SPATIAL_FIELDS and v is not None and v.dim() == 4 and v.shape[2:] == x.shape[2:]}
    return Batch(**{**tensors, **changed}, budget=object.__getattribute__(batch, "budget"))  # type: ignore[arg-type]


AUGMENTATIONS: dict[str, Callable[[Batch], Batch] | None] = {"none": None, "crop_flip": augment_crop_flip}
