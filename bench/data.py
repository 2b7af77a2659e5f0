"""The dataset contract: a ``BiasedDataset`` of named splits of device-resident tensors.

Images are stored as uint8 (0..255) to keep whole datasets on the device; ``Split.images`` turns a
batch into float32 in [0, 1], the only normalisation the seed papers use.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from bench.config import build_dataclass, canonical_json, config_hash
from bench.errors import UserError
from bench.registry import Registry, import_all_modules

TENSOR_FIELDS = ("x", "y", "bias", "group", "mask", "x_debiased")

# The supervision budget (``Method.requires``) grants the fields of a batch: ``x`` and ``index`` always,
# ``y`` for "labels", ``group`` for "group_labels" (the dataset's group of each sample), ``bias`` for "bias_labels"
# (the value of the spurious attribute, e.g. the colour), ``mask`` for "masks", ``x_debiased`` for "debiased_view"
# (and for "teacher" when the teacher's view is the debiased one: it is the teacher's input).
GRANTED_BY = {"y": "labels", "bias": "bias_labels", "group": "group_labels", "mask": "masks",
              "x_debiased": "debiased_view"}
GUARDED_FIELDS = frozenset(GRANTED_BY)


class BudgetViolation(RuntimeError):
    """A method read a field of a batch that its supervision budget does not grant."""


@dataclass(frozen=True)
class Budget:
    """The fields a method may read, derived from its ``requires`` (see ``GRANTED_BY``)."""

    owner: str
    items: frozenset[str]
    fields: frozenset[str]

    @classmethod
    def of(cls, owner: str, requires: frozenset[str] | set[str], teacher_view: str = "x") -> Budget:
        fields = {name for name, item in GRANTED_BY.items() if item in requires}
        if "teacher" in requires and teacher_view == "x_debiased":
            fields.add("x_debiased")
        return cls(owner, frozenset(requires), frozenset(fields))

    def refuse(self, name: str) -> BudgetViolation:
        return BudgetViolation(
            f"method {self.owner!r} read batch.{name}, which its supervision budget ({', '.join(sorted(self.items))}) "
            f"does not grant; declare {GRANTED_BY[name]!r} in its `requires` or do not read it")


_AUDIT: list[set[str]] = []  # the fields read from budgeted batches, while ``audit_reads`` is active


@contextlib.contextmanager
def audit_reads() -> Iterator[set[str]]:
    """Collect the guarded fields read from budgeted batches inside the ``with`` block (tests, provenance)."""
    reads: set[str] = set()
    _AUDIT.append(reads)
    try:
        yield reads
    finally:
        _AUDIT.remove(reads)


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
        """The uint8 images of ``view`` ("x" or "x_debiased"), or ``x`` where this split lacks that view
        (test splits of most families have no debiased view: a model of that view is measured on ``x``)."""
        images = getattr(self, view)
        return self.x if images is None else images

    def batch(self, index: Tensor, views: tuple[str, ...] = ("x", "x_debiased"), budget: Budget | None = None) -> Batch:
        """The images at ``index`` as floats in [0, 1] (``x`` always, ``x_debiased`` when ``views`` lists
        it and the split has it) with their labels, attributes and masks. With a ``budget``, the batch
        holds only what it grants, and reading anything else raises ``BudgetViolation``."""
        allowed = GUARDED_FIELDS if budget is None else budget.fields

        def take(name: str, tensor: Tensor | None, convert: bool = False) -> Tensor | None:
            if tensor is None or name not in allowed:
                return None
            return to_float_images(tensor[index]) if convert else tensor[index]

        debiased = self.x_debiased if "x_debiased" in views else None
        return Batch(
            x=to_float_images(self.x[index]),
            y=take("y", self.y),
            bias=take("bias", self.bias),
            group=take("group", self.group),
            mask=take("mask", self.mask),
            x_debiased=take("x_debiased", debiased, convert=True),
            index=index,
            budget=budget,
        )


@dataclass
class Batch:
    """What a method's ``step`` receives: float images in [0, 1] and what its budget grants of their labels,
    attributes and masks. Reading a field outside ``budget`` raises ``BudgetViolation`` (``budget`` None: the
    engine's own batches, everything readable)."""

    x: Tensor
    y: Tensor | None = None
    bias: Tensor | None = None
    group: Tensor | None = None
    mask: Tensor | None = None
    x_debiased: Tensor | None = None
    index: Tensor | None = None  # positions of the samples in their split (for per-sample stored values)
    budget: Budget | None = None

    def __getattribute__(self, name: str) -> Any:
        if name in GUARDED_FIELDS:
            budget = object.__getattribute__(self, "budget")
            if budget is not None:
                if name not in budget.fields:
                    raise budget.refuse(name)
                for reads in _AUDIT:
                    reads.add(name)
        return object.__getattribute__(self, name)

    def tensors(self) -> dict[str, Tensor | None]:
        """The batch's tensors (the fields its budget withholds are None)."""
        return {k: object.__getattribute__(self, k) for k in (*TENSOR_FIELDS, "index")}

    def view(self, name: str) -> Tensor:
        """The images of view ``name`` ("x" or "x_debiased")."""
        images = getattr(self, name)
        if images is None:
            raise UserError(f"view {name!r} is not in this batch: the dataset lacks it or the method's "
                            "train_views does not list it")
        return images

    def map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        """The batch with ``fn`` applied to every tensor it has (same budget)."""
        tensors = {k: _apply(fn, v) for k, v in self.tensors().items()}
        return Batch(**tensors, budget=object.__getattribute__(self, "budget"))  # type: ignore[arg-type]


class BudgetedSplit:
    """A method's view of a training or validation split: its length and budgeted batches, nothing else."""

    def __init__(self, split: Split, budget: Budget, views: tuple[str, ...] = ("x",)) -> None:
        self._split, self._budget, self._views = split, budget, views

    def __len__(self) -> int:
        return len(self._split)

    @property
    def device(self) -> torch.device:
        return self._split.x.device

    def batch(self, index: Tensor) -> Batch:
        return self._split.batch(index, self._views, self._budget)

    def batches(self, size: int) -> Iterator[Batch]:
        """Every sample once, in order, in batches of at most ``size`` (for whole-split pre-computation)."""
        for start in range(0, len(self), size):
            yield self.batch(torch.arange(start, min(start + size, len(self)), device=self.device))


def _apply(fn: Callable[[Tensor], Tensor], tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else fn(tensor)


def tensors_digest(named: Iterable[tuple[str, Tensor]]) -> str:
    """SHA-256 of named tensors, in the given order: each name, shape, dtype and bytes."""
    digest = hashlib.sha256()
    for name, tensor in named:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def content_digest(dataset: BiasedDataset) -> str:
    """SHA-256 of every tensor of every split (in a fixed order): two runs with the same digest saw the same
    images and labels, whatever machine generated them."""
    return tensors_digest((f"{name}.{key}", getattr(dataset.splits[name], key)) for name in sorted(dataset.splits)
                          for key in ("x", "y", "bias", "group", "mask", "x_debiased")
                          if getattr(dataset.splits[name], key) is not None)


def to_float_images(x: Tensor) -> Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


GROUP_KINDS = ("aligned", "conflicting", "neutral")


@dataclass(frozen=True)
class SplitRoles:
    """What each split of a dataset is for, declared by the dataset (nothing downstream reads split names).

    - ``selection``: the validation split of IID-validation selection (its loss picks the epoch);
    - ``validation``: every held-out split that is not a test split (``selection`` and, e.g., an OOD
      validation split for the oracle);
    - ``iid``: the in-distribution test split (None where the family has none);
    - ``shifted``: the test splits where the shortcut is removed, changed or unbiased (gaps are ``iid`` − each);
    - ``oracle``: the metric the oracle rule maximises (``<split>_<metric>``); on a test split it is an
      upper bound and every table marks it so;
    - ``unbiased_val``: a metric on a group-balanced validation split, for the ``unbiased_val`` rule (None:
      the dataset has no such split);
    - ``headline``: the metric the leaderboard ranks and compares methods on;
    - ``group_kinds``: what each group id means: "aligned" (shortcut agrees with the label), "conflicting",
      "neutral" (no shortcut).
    """

    selection: str
    validation: tuple[str, ...]
    iid: str | None
    shifted: tuple[str, ...]
    oracle: str | None
    headline: str
    group_kinds: dict[int, str]
    unbiased_val: str | None = None

    def validate(self, splits: dict[str, Any], dataset: str) -> None:
        """Every role names an existing split (or a metric of one); a dataset with broken roles is a bug."""
        names = set(splits)
        wanted = [*self.validation, *([self.iid] if self.iid else []), *self.shifted]
        missing = [s for s in wanted if s not in names]
        for metric in (self.oracle, self.headline, self.unbiased_val):
            if metric is not None and metric_split(metric, names) is None:
                missing.append(metric)
        bad_kinds = sorted(set(self.group_kinds.values()) - set(GROUP_KINDS))
        if missing or bad_kinds or self.selection not in self.validation or "train" in wanted:
            raise ValueError(f"dataset {dataset}: split roles name unknown splits or metrics {missing} "
                             f"or group kinds {bad_kinds}")

    def on_test_split(self, metric: str, splits: list[str]) -> bool:
        """Whether ``metric`` is measured on a test split (not on a validation split)."""
        return metric_split(metric, set(splits)) not in self.validation

    def groups_of_kind(self, kind: str) -> list[int]:
        return sorted(g for g, k in self.group_kinds.items() if k == kind)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["shifted"], values["validation"] = list(self.shifted), list(self.validation)
        values["group_kinds"] = {str(k): v for k, v in self.group_kinds.items()}
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SplitRoles:
        return cls(**{**values, "shifted": tuple(values["shifted"]), "validation": tuple(values["validation"]),
                      "group_kinds": {int(k): v for k, v in values["group_kinds"].items()}})


def metric_split(metric: str, splits: set[str]) -> str | None:
    """The split a flat metric key ``<split>_<metric>`` belongs to (the longest split name that prefixes it)."""
    candidates = [s for s in splits if metric.startswith(s + "_")]
    return max(candidates, key=len) if candidates else None


@dataclass
class BiasedDataset:
    """Named splits (``train``, ``val`` and test splits such as ``iid``, ``ood``, ``shift``), what each is
    for (``roles``) and metadata."""

    name: str
    splits: dict[str, Split]
    roles: SplitRoles
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
    # split → (the split it is part of, its rows there): evaluation predicts those images once
    subsets: dict[str, tuple[str, Tensor]] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].x.shape[1:])  # type: ignore[return-value]

    def __post_init__(self) -> None:
        self.roles.validate(self.splits, self.name)
        for name, (parent, rows) in self.subsets.items():
            if parent not in self.splits or parent in self.subsets or name not in self.splits:
                raise ValueError(f"{self.name}: subset {name} of {parent} needs both splits, {parent} not a subset")
            if not torch.equal(self.splits[parent].x[rows], self.splits[name].x):
                raise ValueError(f"{self.name}: split {name} is not rows {parent}[rows] of its declared parent")

    @property
    def test_splits(self) -> list[str]:
        """Every split that is neither trained on nor used for selection."""
        return [s for s in self.splits if s != "train" and s not in self.roles.validation]

    @property
    def eval_splits(self) -> list[str]:
        """Every split an evaluation can measure (all but ``train``): the validation splits at each, the test splits
        at the tested ones."""
        return [s for s in self.splits if s != "train"]

    def to(self, device: torch.device | str) -> BiasedDataset:
        return dataclasses.replace(self, splits={k: v.to(device) for k, v in self.splits.items()},
                                   subsets={k: (parent, rows.to(device)) for k, (parent, rows) in self.subsets.items()})

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
            "roles": self.roles.to_dict(),
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


DATASETS: Registry[DatasetFamily] = Registry("dataset", loader=lambda: import_all_modules("datasets"))


def register_dataset(name: str) -> Callable[[Any], Any]:
    return DATASETS.register(name)  # type: ignore[return-value]


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_config(name: str, params: dict[str, Any] | None = None) -> Any:
    """The family's typed config from user values (validated)."""
    family = DATASETS.get(name)
    return build_dataclass(family.Config, dict(params or {}), f"{name} option")


def generator_code_fingerprint() -> str:
    """A hash of the dataset generators' code (every ``datasets/*.py`` and the sprite manifest): editing a
    generator invalidates cached datasets even when nobody bumps its ``version``."""
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
        "subsets": {s: {"parent": parent, "rows": rows.cpu()} for s, (parent, rows) in dataset.subsets.items()},
    }
    atomic_torch_save(payload, path)


def _read_cached(path: Path) -> BiasedDataset:
    import json

    payload = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(payload["meta"])
    meta["group_names"] = {int(k): v for k, v in meta["group_names"].items()}
    meta["roles"] = SplitRoles.from_dict(meta["roles"])
    splits = {s: Split(**tensors) for s, tensors in payload["splits"].items()}
    subsets = {s: (str(part["parent"]), part["rows"]) for s, part in payload.get("subsets", {}).items()}
    return BiasedDataset(splits=splits, subsets=subsets, **meta)
