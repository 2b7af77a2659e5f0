"""Explanation metrics measured at every evaluation, next to accuracy.

On the first ``PROBE_SIZE`` images of every test split (the same images for every run of a dataset) the
run's predictor is explained for the true class with LRP-ε (Gradient×Input where LRP has no rule for
the model, e.g. B-cos networks), summed over channels, and compared with

- the **teacher's heatmap** of the same image, on the teacher's view (the distillation target):
  ``<split>_expl_cosine`` (mean cosine similarity) and ``<split>_expl_l1`` (mean normalised L1 distance,
  ½‖a/‖a‖₁ − b/‖b‖₁‖₁ ∈ [0, 1], 0 = identical up to scale);
- the dataset's **known shortcut region** (``BiasedDataset.shortcut_region``: the mask itself, such as a
  corner patch or a tie, or everything outside an object mask, such as a background):
  ``<split>_shortcut_relevance``, the mean fraction of an image's positive relevance that falls on it.

The probe also keeps a few fixed bias-aligned and bias-conflicting images with both heatmaps for the
report's explanation galleries (``gallery``). Everything stays on the device; ``metrics`` syncs once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data import BiasedDataset, Split, to_float_images
from bench.explain import explain

PROBE_SIZE = 256
GALLERY_PER_GROUP = 4
LRP_EPS = 0.01
FALLBACK_EXPLAINER = "gradinput"


@dataclass(frozen=True)
class Row:
    """One gallery image: its split, its position there and its group."""

    split: str
    index: int
    group: int


def pick_rows(dataset: BiasedDataset, n: int) -> list[Row]:
    """The first ``n`` bias-aligned images of the IID test split and the first ``n`` bias-conflicting ones of
    the last shifted split (each falling back to the other test splits; group kinds from the dataset's roles)."""
    roles = dataset.roles
    iid = [roles.iid] if roles.iid else []
    return (first_of_kind(dataset, "aligned", n, [*iid, *roles.shifted])
            + first_of_kind(dataset, "conflicting", n, [*reversed(roles.shifted), *iid]))


def first_of_kind(dataset: BiasedDataset, kind: str, n: int, preferred: list[str]) -> list[Row]:
    """Up to ``n`` images whose group is of ``kind``, from the first of ``preferred`` (then the other test
    splits) that has any."""
    groups = dataset.roles.groups_of_kind(kind)
    for name in dict.fromkeys([*preferred, *dataset.test_splits]):
        split = dataset.splits[name]
        found = torch.isin(split.group, torch.tensor(groups, device=split.group.device)).nonzero().flatten()
        index = found[:n].tolist()
        if index:
            return [Row(name, i, int(split.group[i])) for i in index]
    return []


def shortcut_region(split: Split, kind: str) -> Tensor | None:
    """N×H×W bool map of the shortcut's pixels, or None when the dataset has no spatial shortcut."""
    if split.mask is None or kind not in ("mask", "outside_mask"):
        return None
    region = split.mask[:, 0].bool()
    return region if kind == "mask" else ~region


def shortcut_fraction(maps: Tensor, region: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: the fraction of positive relevance on ``region``, and whether the image has any."""
    positive = maps.clamp_min(0)
    total = positive.flatten(1).sum(1)
    inside = (positive * region).flatten(1).sum(1)
    return inside / total.clamp_min(torch.finfo(maps.dtype).tiny), total > 0


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-image cosine similarity of two stacks of maps."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)


def normalised_l1(a: Tensor, b: Tensor) -> Tensor:
    """Per-image ½‖a/‖a‖₁ − b/‖b‖₁‖₁ (0 = equal up to a positive scale, 1 = disjoint supports or opposite)."""
    a, b = a.flatten(1), b.flatten(1)
    a = a / a.abs().sum(1, keepdim=True).clamp_min(1e-12)
    b = b / b.abs().sum(1, keepdim=True).clamp_min(1e-12)
    return 0.5 * (a - b).abs().sum(1)


def masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    return (values * keep).sum() / keep.sum().clamp_min(1)


def choose_explainer(model: nn.Module, x: Tensor) -> str:
    """``lrp`` when LRP has rules for every layer of ``model``, else Gradient×Input."""
    try:
        explain(model, x[:1], torch.zeros(1, dtype=torch.long, device=x.device), "lrp", eps=LRP_EPS)
    except (NotImplementedError, ValueError, TypeError, RuntimeError):
        return FALLBACK_EXPLAINER
    return "lrp"


def input_maps(model: nn.Module, x: Tensor, y: Tensor, explainer: str, batch_size: int) -> Tensor:
    """N×H×W heatmaps of the true class (input-level maps summed over channels), batched."""
    kwargs: dict[str, Any] = {"eps": LRP_EPS} if explainer == "lrp" else {}
    return torch.cat([explain(model, x[i:i + batch_size], y[i:i + batch_size], explainer, **kwargs).sum(1)
                      for i in range(0, len(x), batch_size)])


class ExplanationProbe:
    """Fixed probe images of a dataset and, when there is a teacher, its heatmaps (computed once)."""

    def __init__(self, dataset: BiasedDataset, teacher: nn.Module | None, view: str = "x",
                 teacher_view: str = "x", size: int = PROBE_SIZE, batch_size: int = 128) -> None:
        self.batch_size = batch_size
        self.kind = dataset.shortcut_region
        self.splits = {name: dataset.splits[name] for name in dataset.test_splits}
        self.n = {name: min(size, len(split)) for name, split in self.splits.items()}
        self.view, self.teacher_view = view, teacher_view
        self.teacher = teacher
        self.rows = pick_rows(dataset, GALLERY_PER_GROUP)
        self.explainer = ""
        self.teacher_explainer = ""
        self.teacher_maps: dict[str, Tensor] = {}
        self.teacher_gallery: dict[str, Any] = {}  # the teacher is frozen: its gallery maps are computed once

    def _images(self, name: str, view: str) -> tuple[Tensor, Tensor]:
        split = self.splits[name]
        return to_float_images(split.view_images(view)[: self.n[name]]), split.y[: self.n[name]]

    def _teacher_maps(self) -> dict[str, Tensor]:
        if self.teacher is None or self.teacher_maps:
            return self.teacher_maps
        for name in self.splits:
            x, y = self._images(name, self.teacher_view)
            self.teacher_explainer = self.teacher_explainer or choose_explainer(self.teacher, x)
            self.teacher_maps[name] = input_maps(self.teacher, x, y, self.teacher_explainer, self.batch_size)
        return self.teacher_maps

    def metrics(self, model: nn.Module) -> dict[str, float]:
        """``<split>_shortcut_relevance``, and with a teacher ``<split>_expl_cosine`` and ``<split>_expl_l1``."""
        values: dict[str, Tensor] = {}
        teacher_maps = self._teacher_maps()
        for name, split in self.splits.items():
            x, y = self._images(name, self.view)
            self.explainer = self.explainer or choose_explainer(model, x)
            maps = input_maps(model, x, y, self.explainer, self.batch_size)
            region = shortcut_region(split, self.kind)
            if region is not None:
                fraction, has_relevance = shortcut_fraction(maps, region[: self.n[name]])
                values[f"{name}_shortcut_relevance"] = masked_mean(fraction, has_relevance)
            if name in teacher_maps:
                values[f"{name}_expl_cosine"] = cosine(maps, teacher_maps[name]).mean()
                values[f"{name}_expl_l1"] = normalised_l1(maps, teacher_maps[name]).mean()
        if not values:
            return {}
        keys = list(values)
        return dict(zip(keys, torch.stack([values[k] for k in keys]).tolist(), strict=True))

    def gallery(self, model: nn.Module) -> dict[str, Any]:
        """The gallery rows' images (uint8, the student's view), labels, groups, predictions and heatmaps
        (float16), as plain tensors and lists (loadable with ``torch.load(weights_only=True)``)."""
        if not self.rows:
            return {}
        x, y = self._row_images(self.view)
        self.explainer = self.explainer or choose_explainer(model, x)
        with torch.no_grad():
            preds = model(x).argmax(1)
        record: dict[str, Any] = {
            "images": (x * 255).round().to(torch.uint8).cpu(), "labels": y.cpu(), "preds": preds.cpu(),
            "groups": torch.tensor([r.group for r in self.rows]), "splits": [r.split for r in self.rows],
            "indices": torch.tensor([r.index for r in self.rows]), "explainer": self.explainer,
            "maps": input_maps(model, x, y, self.explainer, self.batch_size).half().cpu(),
        }
        if self.teacher is not None and not self.teacher_gallery:
            tx, _ = self._row_images(self.teacher_view)
            self.teacher_explainer = self.teacher_explainer or choose_explainer(self.teacher, tx)
            teacher_maps = input_maps(self.teacher, tx, y, self.teacher_explainer, self.batch_size)
            self.teacher_gallery = {"teacher_maps": teacher_maps.half().cpu(),
                                    "teacher_explainer": self.teacher_explainer}
        return {**record, **self.teacher_gallery}

    def _row_images(self, view: str) -> tuple[Tensor, Tensor]:
        images = torch.stack([self.splits[r.split].view_images(view)[r.index] for r in self.rows])
        return to_float_images(images), torch.stack([self.splits[r.split].y[r.index] for r in self.rows])
