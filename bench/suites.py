"""Suites: named lists of (dataset, methods, protocol, seeds), defined as YAML files in
``bench/suites/`` (or in Python with ``register_suite``), expanded into run configs by the sweep."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UserError
from bench.registry import Registry
from bench.runs import TEACHER_METHOD, RunConfig, make_run_config

SUITE_DIR = Path(__file__).resolve().parent / "suites"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method overrides on this dataset
    methods: tuple[str, ...] | None = None  # run only these methods on this dataset (default: the suite's)
    seeds: int | None = None  # this entry's number of seeds (default: the suite's; --seeds overrides both)
    # per method, hyper-parameter → values: one run per point of their product (a tuning grid)
    grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def method_points(self, suite_hparams: dict[str, dict[str, Any]], method: str) -> list[dict[str, Any] | None]:
        """The method's hyper-parameter overrides on this dataset: one per grid point (one without a grid)."""
        base = self.method_hparams(suite_hparams, method)
        axes = self.grid.get(method) or {}
        if not axes:
            return [base]
        return [{**(base or {}), **dict(zip(axes, values, strict=True))}
                for values in itertools.product(*axes.values())]

    def method_hparams(self, suite_hparams: dict[str, dict[str, Any]], method: str) -> dict[str, Any] | None:
        """The suite's overrides of ``method``, updated with this dataset's."""
        merged = {**suite_hparams.get(method, {}), **self.hparams.get(method, {})}
        return merged or None


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    protocol: str
    methods: tuple[str, ...]
    datasets: tuple[DatasetEntry, ...]
    seeds: int = 1
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method overrides ("teacher" too)
    model: str | None = None  # the student model of every run, instead of the protocol's (e.g. a paper's CNN)
    teacher_model: str | None = None  # the teacher's model, instead of the protocol's

    def expand(self, seeds: int | None = None, protocol: str | None = None) -> list[RunConfig]:
        """Every run of the suite: teachers first (others depend on them), then dataset × method × seed."""
        n_seeds = self.seeds if seeds is None else seeds
        if n_seeds < 1:
            raise UserError(f"--seeds must be >= 1, got {n_seeds}")
        configs = [
            make_run_config(method, entry.name, protocol or self.protocol, seed, hparams=point,
                            dataset_params=entry.params,
                            teacher_hparams=entry.method_hparams(self.hparams, TEACHER_METHOD),
                            model=self.teacher_model if method == TEACHER_METHOD else self.model,
                            teacher_model=self.teacher_model)
            for entry in self.datasets for method in (entry.methods or self.methods)
            for point in entry.method_points(self.hparams, method)
            for seed in range(n_seeds if seeds is not None or entry.seeds is None else entry.seeds)
        ]
        teachers = {RunConfig.from_dict(c.teacher).run_id: RunConfig.from_dict(c.teacher)
                    for c in configs if c.teacher}
        ordered = list(teachers.values()) + [c for c in configs if c.run_id not in teachers]
        return list({c.run_id: c for c in ordered}.values())


def _load_yaml_suites() -> None:
    """Register every suite file; a malformed one is recorded as broken under its file name, so that only
    asking for it fails and the other suites keep working."""
    for path in sorted(SUITE_DIR.glob("*.yaml")):
        try:
            register_suite(suite_from_yaml(path))
        except UserError as err:
            SUITES.mark_broken(path.stem, str(err))
        except ValueError as err:  # the same suite name in two files
            SUITES.mark_broken(path.stem, f"suite file {path}: {err}; give each suite file its own name")


SUITES: Registry[Suite] = Registry("suite", loader=_load_yaml_suites)


def register_suite(suite: Suite) -> Suite:
    return SUITES.register(suite.name)(suite)


def list_suites() -> list[str]:
    return SUITES.names()


def get_suite(name: str) -> Suite:
    return SUITES.get(name)


def _dataset_entry(raw: dict[str, Any]) -> DatasetEntry:
    hparams = {method: dict(values) for method, values in (raw.get("hparams") or {}).items()}
    methods = tuple(raw["methods"]) if raw.get("methods") else None
    seeds = None if raw.get("seeds") is None else int(raw["seeds"])
    if seeds is not None and seeds < 1:
        raise ValueError(f"dataset entry {raw['name']}: seeds must be >= 1, got {seeds}")
    grid = {method: {key: list(vals) for key, vals in axes.items()} for method, axes in (raw.get("grid") or {}).items()}
    for method, axes in grid.items():
        if not axes or any(not vals for vals in axes.values()):
            raise ValueError(f"dataset entry {raw['name']}: the grid of {method} needs at least one value per key")
    return DatasetEntry(raw["name"], dict(raw.get("params") or {}), hparams, methods, seeds, grid)


def suite_from_yaml(path: Path) -> Suite:
    try:
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise TypeError("the file must be a mapping with name, protocol, methods and datasets")
        datasets = tuple(
            DatasetEntry(d) if isinstance(d, str) else _dataset_entry(d) for d in raw["datasets"]
        )
        return Suite(name=str(raw["name"]), description=str(raw.get("description") or ""),
                     protocol=str(raw["protocol"]), methods=tuple(raw["methods"]), datasets=datasets,
                     seeds=int(raw.get("seeds", 1)),
                     hparams={k: dict(v) for k, v in (raw.get("hparams") or {}).items()},
                     model=None if raw.get("model") is None else str(raw["model"]),
                     teacher_model=None if raw.get("teacher_model") is None else str(raw["teacher_model"]))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        hint = "compare it with bench/suites/quick.yaml"
        raise UserError(f"suite file {path} is malformed ({_describe(err)}); {hint}") from None


def _describe(err: Exception) -> str:
    """One line: YAML's own messages span several lines (with the offending text and a caret)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {err.problem or err.context}"
    if isinstance(err, KeyError):
        return f"missing key {err.args[0]!r}"
    return " ".join(str(err).split())
