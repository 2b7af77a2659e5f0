"""Heatmaps of the engine: the explanation metrics measured at every evaluation and the gallery artefacts, both
computed here once and only rendered by the reports.

On the first ``PROBE_SIZE`` images of every test split (the same images for every run of a dataset) the
run's predictor is explained for the true class with LRP-ε (Gradient×Input where LRP has no rule for
the model, e.g. B-cos networks; the explainer is recorded with the run), summed over channels, and compared with

- the **teacher's heatmap** of the same image, on the teacher's view (the distillation target):
  ``<split>_expl_cosine`` (mean cosine similarity) and ``<split>_expl_l1`` (mean normalised L1 distance,
  ½‖a/‖a‖₁ − b/‖b‖₁‖₁ ∈ [0, 1], 0 = identical up to scale);
- the dataset's **known shortcut region** (``BiasedDataset.shortcut_region``: the mask itself, such as a
  corner patch or a tie, or everything outside an object mask, such as a background):
  ``<split>_shortcut_relevance``, the mean fraction of an image's positive relevance that falls on it.

The **gallery** of a run: fixed bias-aligned and bias-conflicting test images (``pick_rows``, from the
dataset's declared group kinds) with heatmap columns, the run's model on its view and the teacher always on
the teacher's view; the runner saves one with the kept checkpoint (``gallery.npz``) and ``explain_run``
computes one for the ``explain`` command with any explainers, through the same functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.data import BiasedDataset, Split, load_dataset, to_float_images
from bench.errors import UserError
from bench.explain import explain
from bench.explain.cam import upsample
from bench.store import Store

PROBE_SIZE = 256
GALLERY_PER_GROUP = 4
LRP_EPS = 0.01
FALLBACK_EXPLAINER = "gradinput"
LRP_EXPLAINERS = ("lrp", "lrp_flex")  # take the stabiliser ε
FEATURE_EXPLAINERS = ("gradcam", "attention")  # B×1×h×w maps at a feature layer, upsampled to the input


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
    """``lrp`` when LRP has a rule for every module of ``model``, else Gradient×Input (e.g. B-cos networks). Only
    the engine's "no LRP rule" error selects the fallback; any other error is a bug and propagates. The run
    records which explainer its metrics used."""
    try:
        explain(model, x[:1], torch.zeros(1, dtype=torch.long, device=x.device), "lrp", eps=LRP_EPS)
    except NotImplementedError:
        return FALLBACK_EXPLAINER
    return "lrp"


def input_maps(model: nn.Module, x: Tensor, y: Tensor, explainer: str, batch_size: int = 128) -> Tensor:
    """N×H×W heatmaps of the true class: input-level maps summed over channels, feature-layer maps upsampled to
    the input first; batched."""
    kwargs: dict[str, Any] = {"eps": LRP_EPS} if explainer in LRP_EXPLAINERS else {}
    maps = []
    for i in range(0, len(x), batch_size):
        batch = explain(model, x[i:i + batch_size], y[i:i + batch_size], explainer, **kwargs)
        maps.append((upsample(batch, like=x[i:i + batch_size]) if explainer in FEATURE_EXPLAINERS else batch).sum(1))
    return torch.cat(maps)


def eval_view(trains_teacher: bool) -> str:
    """The view a run's model is measured and explained on: a teacher trained on debiased images sees the
    debiased images where a split has them; every other model sees ``x``."""
    return "x_debiased" if trains_teacher else "x"


@dataclass(frozen=True)
class Column:
    """One heatmap column of a gallery: whose model ("student": the run's own, or "teacher"), which explainer."""

    model: str
    explainer: str


def gallery_record(splits: dict[str, Split], rows: list[Row], kinds: dict[int, str],
                   models: dict[str, tuple[nn.Module, str]], columns: list[Column],
                   frozen: dict[Column, tuple[Tensor, Tensor]] | None = None) -> dict[str, Any]:
    """The rows' images (uint8, the student's view), labels, groups and their kinds, and per column the model's
    predictions and heatmaps (float16) on that model's view. ``models``: name → (network, view). ``frozen``:
    columns of frozen models (the teacher), computed once and kept there. Plain numpy arrays, for
    ``bench.artifacts.save_gallery``."""
    y = torch.stack([splits[r.split].y[r.index] for r in rows])
    images = {name: row_images(splits, rows, view) for name, (_, view) in models.items()}
    maps, preds = [], []
    for column in columns:
        if frozen is None or column not in frozen:
            model, x = models[column.model][0], images[column.model]
            with torch.no_grad():
                pred = model(x).argmax(1).cpu()
            computed = (pred, input_maps(model, x, y, column.explainer).half().cpu())
            if frozen is not None and column.model == "teacher":
                frozen[column] = computed
        pred, heatmap = frozen[column] if frozen is not None and column in frozen else computed
        preds.append(pred)
        maps.append(heatmap)
    student = images["student"] if "student" in images else next(iter(images.values()))
    return {
        "images": (student * 255).round().to(torch.uint8).cpu().numpy(), "labels": y.cpu().numpy(),
        "groups": np.array([r.group for r in rows]), "kinds": np.array([kinds.get(r.group, "") for r in rows]),
        "splits": np.array([r.split for r in rows]), "indices": np.array([r.index for r in rows]),
        "columns": np.array([c.model for c in columns]), "explainers": np.array([c.explainer for c in columns]),
        "preds": torch.stack(preds).numpy(), "maps": torch.stack(maps).numpy(),
    }


def row_images(splits: dict[str, Split], rows: list[Row], view: str) -> Tensor:
    return to_float_images(torch.stack([splits[r.split].view_images(view)[r.index] for r in rows]))


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
        self.kinds = dict(dataset.roles.group_kinds)
        self.explainer = ""
        self.teacher_explainer = ""
        self.teacher_maps: dict[str, Tensor] = {}
        self.teacher_gallery: dict[Column, tuple[Tensor, Tensor]] = {}  # the teacher is frozen: computed once

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
        """The gallery of ``model`` (the run's predictor) with the explainer of its metrics, next to the teacher's
        map of the same images on the teacher's view; {} when the dataset has no test images."""
        if not self.rows:
            return {}
        x = row_images(self.splits, self.rows, self.view)
        self.explainer = self.explainer or choose_explainer(model, x)
        models = {"student": (model, self.view)}
        columns = [Column("student", self.explainer)]
        if self.teacher is not None:
            tx = row_images(self.splits, self.rows, self.teacher_view)
            self.teacher_explainer = self.teacher_explainer or choose_explainer(self.teacher, tx)
            models["teacher"] = (self.teacher, self.teacher_view)
            columns.append(Column("teacher", self.teacher_explainer))
        return gallery_record(self.splits, self.rows, self.kinds, models, columns, self.teacher_gallery)


def explain_run(store: Store, run_id: str, explainers: list[str], n_per_group: int) -> dict[str, Any]:
    """The gallery of a finished run for the ``explain`` command: its kept network with every explainer of
    ``explainers``, then its teacher (on the teacher's view) with the first; the same rows and functions as
    the gallery the runner saves."""
    from bench.artifacts import model_from_checkpoint
    from bench.method import get_method
    from bench.runs import RunConfig

    record = store.get(run_id)
    if record is None or record["status"] != "finished":
        raise UserError(f"run {run_id} is {'unknown' if record is None else record['status']}, not finished; "
                        "finish it first (re-run its command or sweep)")
    cfg = RunConfig.from_dict(record["config"])
    dataset = load_dataset(cfg.dataset, cfg.dataset_params, cfg.seed, "cpu")
    rows = pick_rows(dataset, n_per_group)
    if not rows:
        raise UserError(f"dataset {dataset.name} has no test images to show")
    student = model_from_checkpoint(store.run_dir(run_id) / "best.pt", cfg.model, f"run {run_id}")
    models = {"student": (student, eval_view(get_method(cfg.method).is_teacher))}
    columns = [Column("student", name) for name in explainers]
    if cfg.teacher:
        teacher_cfg = RunConfig.from_dict(cfg.teacher)
        teacher = model_from_checkpoint(store.run_dir(teacher_cfg.run_id) / "best.pt", teacher_cfg.model,
                                        f"teacher run {teacher_cfg.run_id}")
        models["teacher"] = (teacher, dataset.teacher_view)
        columns.append(Column("teacher", explainers[0]))
    splits = {name: dataset.splits[name] for name in dataset.test_splits}
    return gallery_record(splits, rows, dict(dataset.roles.group_kinds), models, columns)
