"""The dataset contract: a ``BiasedDataset`` of named splits of device-resident tensors.

Images are stored as uint8 (0..255) to keep whole datasets on the device; ``Split.images`` turns a
batch into float32 in [0, 1], the only normalisation the seed papers use.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from bench.config import build_dataclass, canonical_json, config_hash
from bench.errors import UserError
from bench.registry import Registry, import_all_modules

TENSOR_FIELDS = ("x", "y", "bias", "group", "mask", "x_debiased")


@dataclass
class Split:
    """One split. ``x``/``x_debiased``: N×C×H×W uint8; ``y``, ``bias``, ``group``: N int64;
    ``mask``: N×1×H×W bool (object or shortcut region) when the dataset has one."""

    x: Tensor
    y: Tensor
    bias: Tensor
    group: Tensor
    mask: Tensor | None = None
    x_debiased: Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return self.map(lambda t: t.to(device))

    def map(self, fn: Callable[[Tensor], Tensor]) -> Split:
        """The split with ``fn`` applied to every tensor it has."""
        return Split(x=fn(self.x), y=fn(self.y), bias=fn(self.bias), group=fn(self.group),
                     mask=_apply(fn, self.mask), x_debiased=_apply(fn, self.x_debiased))

    def tensors(self) -> dict[str, Tensor | None]:
        return {k: getattr(self, k) for k in TENSOR_FIELDS}

    def view_images(self, view: str) -> Tensor:
        """The uint8 images of ``view`` ("x" or "x_debiased"), or ``x`` where this split lacks that view."""
        images = getattr(self, view)
        return self.x if images is None else images

    def batch(self, index: Tensor, views: tuple[str, ...] = ("x", "x_debiased")) -> Batch:
        """The images at ``index`` as floats in [0, 1] (``x`` always, ``x_debiased`` when ``views`` lists
        it and the split has it) with their labels, attributes and masks."""
        debiased = self.x_debiased if "x_debiased" in views else None
        return Batch(
            x=to_float_images(self.x[index]),
            y=self.y[index],
            bias=self.bias[index],
            group=self.group[index],
            mask=None if self.mask is None else self.mask[index],
            x_debiased=None if debiased is None else to_float_images(debiased[index]),
            index=index,
        )


@dataclass
class Batch:
    """What a method's ``step`` receives: float images in [0, 1] and their labels/attributes."""

    x: Tensor
    y: Tensor
    bias: Tensor
    group: Tensor
    mask: Tensor | None = None
    x_debiased: Tensor | None = None
    index: Tensor | None = None  # positions of the samples in their split (for per-sample stored values)

    def tensors(self) -> dict[str, Tensor | None]:
        return {k: getattr(self, k) for k in (*TENSOR_FIELDS, "index")}

    def view(self, name: str) -> Tensor:
        """The images of view ``name`` ("x" or "x_debiased")."""
        images = getattr(self, name)
        if images is None:
            raise UserError(f"view {name!r} is not in this batch: the dataset lacks it or the method's "
                            "train_views does not list it")
        return images

    def map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        """The batch with ``fn`` applied to every tensor it has."""
        return Batch(x=fn(self.x), y=fn(self.y), bias=fn(self.bias), group=fn(self.group),
                     mask=_apply(fn, self.mask), x_debiased=_apply(fn, self.x_debiased), index=_apply(fn, self.index))


def _apply(fn: Callable[[Tensor], Tensor], tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else fn(tensor)


def to_float_images(x: Tensor) -> Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@dataclass
class BiasedDataset:
    """Named splits (``train``, ``val`` and test splits such as ``iid``, ``ood``, ``shift``) plus metadata."""

    name: str
    splits: dict[str, Split]
    num_classes: int
    class_names: list[str]
    bias_kind: str
    bias_strength: float
    split_descriptions: dict[str, str]
    group_names: dict[int, str] = field(default_factory=dict)
    teacher_view: str = "x"  # the view a distillation teacher is fed: "x" or "x_debiased"
    card: str = ""
    shortcut_region: str = ""  # where the shortcut is in the image: "mask" (the mask is the shortcut),
    #                            "outside_mask" (the mask is the object, the shortcut its background), "" (not spatial)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].x.shape[1:])  # type: ignore[return-value]

    @property
    def test_splits(self) -> list[str]:
        return [s for s in self.splits if s not in ("train", "val")]

    def to(self, device: torch.device | str) -> BiasedDataset:
        return dataclasses.replace(self, splits={k: v.to(device) for k, v in self.splits.items()})

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "bias_kind": self.bias_kind,
            "bias_strength": self.bias_strength,
            "split_descriptions": self.split_descriptions,
            "group_names": {str(k): v for k, v in self.group_names.items()},
            "teacher_view": self.teacher_view,
            "card": self.card,
            "shortcut_region": self.shortcut_region,
        }


class DatasetFamily(Protocol):
    """What ``@register_dataset`` expects: a ``Config`` dataclass, a ``version``, a ``card``,
    ``test_options`` (small config values for the contract tests) and ``build``; optionally
    ``fingerprint(cfg) -> str`` naming the source files' state, so edited user files invalidate the cache."""

    Config: type
    version: str
    card: str
    test_options: dict[str, Any]

    @staticmethod
    def build(cfg: Any, device: torch.device, seed: int) -> BiasedDataset: ...


DATASETS: Registry[Any] = Registry("dataset", loader=lambda: import_all_modules("datasets"))


def register_dataset(name: str) -> Callable[[Any], Any]:
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_config(name: str, params: dict[str, Any] | None = None) -> Any:
    """The family's typed config from user values (validated)."""
    family = DATASETS.get(name)
    return build_dataclass(family.Config, dict(params or {}), f"{name} option")


def generator_code_fingerprint() -> str:
    """A hash of the dataset generators' code (every ``datasets/*.py`` and the sprite manifest): editing a
    generator invalidates cached datasets even when nobody bumps its ``version``."""
    import hashlib

    root = Path(__file__).resolve().parent.parent / "datasets"
    digest = hashlib.sha256()
    for path in sorted([*root.glob("*.py"), root / "assets" / "sprites" / "manifest.json"]):
        if path.exists():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path(__file__).resolve().parent.parent / "results" / "cache"))


def load_dataset(
    name: str,
    params: dict[str, Any] | None,
    seed: int,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
) -> BiasedDataset:
    """Build (or load from the cache) dataset ``name`` for ``seed`` and put it on ``device``."""
    family = DATASETS.get(name)
    cfg = dataset_config(name, params)
    fingerprint = family.fingerprint(cfg) if hasattr(family, "fingerprint") else ""
    key = config_hash({"name": name, "version": family.version, "cfg": dataclasses.asdict(cfg), "seed": seed,
                       "source": fingerprint, "code": generator_code_fingerprint()})
    path = (cache_dir or default_cache_dir()) / "datasets" / f"{name}-{key}.pt"
    device = torch.device(device)
    if path.exists():
        try:
            return _read_cached(path).to(device)
        except Exception:  # a torn or foreign cache file: rebuild it
            path.unlink(missing_ok=True)
    dataset = family.build(cfg, device, seed)
    _write_cached(path, dataset)
    return dataset


def _write_cached(path: Path, dataset: BiasedDataset) -> None:
    from bench.atomic import atomic_torch_save

    payload = {
        "meta": canonical_json(dataset.meta()),
        "splits": {s: {k: (None if v is None else v.cpu()) for k, v in sp.tensors().items()}
                   for s, sp in dataset.splits.items()},
    }
    atomic_torch_save(payload, path)


def _read_cached(path: Path) -> BiasedDataset:
    import json

    payload = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(payload["meta"])
    meta["group_names"] = {int(k): v for k, v in meta["group_names"].items()}
    splits = {s: Split(**tensors) for s, tensors in payload["splits"].items()}
    return BiasedDataset(splits=splits, **meta)
