"""Readable names for runs that share a method (or dataset) name but not a configuration.

Runs are averaged over seeds only when everything but the seed matches. When a results folder holds
several variants (e.g. a learning-rate sweep, or two bias strengths), each gets a label naming what
differs: ``kd [lr=0.1]``, ``coloured_mnist [strength=0.8]``.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any


def _flat(prefix: str, values: dict[str, Any] | None) -> dict[str, str]:
    return {f"{prefix}{k}": json.dumps(v, sort_keys=True) for k, v in (values or {}).items()}


def _labels(base: str, variants: dict[str, dict[str, str]]) -> dict[str, str]:
    """``variants``: signature → flat settings. Returns signature → label (bare ``base`` when unique)."""
    if len(variants) <= 1:
        return {sig: base for sig in variants}
    keys = sorted({k for flat in variants.values() for k in flat})
    differing = [k for k in keys if len({flat.get(k) for flat in variants.values()}) > 1]
    labels = {}
    for sig, flat in variants.items():
        parts = [f"{k.split('.', 1)[-1]}={json.loads(flat[k]) if k in flat else '-'}" for k in differing]
        labels[sig] = f"{base} [{', '.join(parts)}]"
    return labels


def _teacher_signature(config: dict[str, Any]) -> dict[str, str]:
    """Runs distilled from different teachers are different variants (label: a short hash of its config)."""
    teacher = config.get("teacher")
    if not teacher:
        return {}
    digest = hashlib.sha256(json.dumps(teacher, sort_keys=True).encode()).hexdigest()[:6]
    return {"teacher.teacher": json.dumps(digest)}


def display_names(runs: Iterable[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """run_id → (method label, dataset label)."""
    runs = list(runs)
    dataset_variants: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for run in runs:
        flat = _flat("data.", run["config"].get("dataset_params"))
        dataset_variants[run["dataset"]][json.dumps(flat, sort_keys=True)] = flat
    dataset_label = {name: _labels(name, variants) for name, variants in dataset_variants.items()}

    def dataset_of(run: dict[str, Any]) -> str:
        flat = _flat("data.", run["config"].get("dataset_params"))
        return dataset_label[run["dataset"]][json.dumps(flat, sort_keys=True)]

    method_variants: dict[tuple[str, str, str], dict[str, dict[str, str]]] = defaultdict(dict)
    signatures: dict[str, tuple[tuple[str, str, str], str]] = {}
    for run in runs:
        config = run["config"]
        flat = {"model.model": json.dumps(run["model"]), **_flat("hp.", config.get("hparams")),
                **_teacher_signature(config)}
        group = (run["method"], dataset_of(run), run["protocol"])
        sig = json.dumps(flat, sort_keys=True)
        method_variants[group][sig] = flat
        signatures[run["run_id"]] = (group, sig)
    method_label = {group: _labels(group[0], variants) for group, variants in method_variants.items()}
    return {run_id: (method_label[group][sig], group[1]) for run_id, (group, sig) in signatures.items()}
