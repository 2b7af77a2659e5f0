"""The code a run's numbers depend on, as hashes: the engine, the method's modules, the dataset family's
modules, and (for a distilled student) its teacher's code. A finished run whose code fingerprint differs
from the current one is *stale*.

The engine is every module of ``bench/`` except those that cannot change a number given the resolved run
config (which the run id already hashes): suites and sweeps, perf, provenance, the store,
the registries, the typed-config parsing, atomic writes and user errors. A method's or dataset family's
code is its module plus the project modules it uses (found by following module globals, within
``methods/`` and ``datasets/``).
"""
from __future__ import annotations

import hashlib
import inspect
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_PACKAGES = ("methods", "datasets")
NOT_RESULT_CODE = {"perf.py", "suites.py", "sweep.py", "provenance.py", "fingerprint.py", "__init__.py",
                   "store.py", "registry.py", "config.py", "atomic.py", "errors.py"}


def _digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@cache
def engine_fingerprint() -> str:
    bench = ROOT / "bench"
    return _digest([p for p in bench.rglob("*.py") if p.name not in NOT_RESULT_CODE or p.parent != bench])


def _plugin_modules(module: ModuleType, seen: set[str]) -> None:
    """``module`` and, recursively, the plugin-package modules its globals come from."""
    if module.__name__ in seen:
        return
    seen.add(module.__name__)
    for value in vars(module).values():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", None)
        if isinstance(name, str) and name.split(".")[0] in PLUGIN_PACKAGES and name in sys.modules:
            _plugin_modules(sys.modules[name], seen)


def plugin_fingerprint(obj: Any) -> str:
    """A hash of the plugin modules ``obj`` (a registered method class or dataset family) is made of."""
    seen: set[str] = set()
    classes = inspect.getmro(obj) if inspect.isclass(obj) else (obj,)
    for cls in classes:
        module = sys.modules.get(getattr(cls, "__module__", ""))
        if module is not None and module.__name__.split(".")[0] in PLUGIN_PACKAGES:
            _plugin_modules(module, seen)
    files = [Path(inspect.getfile(sys.modules[name])) for name in seen]
    extra = [ROOT / "datasets" / "assets" / "sprites" / "manifest.json"] if any(
        n.startswith("datasets.") for n in seen) else []
    return _digest(files + [p for p in extra if p.exists()])


def code_fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The code fingerprint of a run config (``RunConfig.to_dict()``): its parts and their combined hash."""
    from bench.data import DATASETS
    from bench.method import get_method

    parts: dict[str, Any] = {
        "engine": engine_fingerprint(),
        "method": plugin_fingerprint(get_method(config["method"])),
        "dataset": plugin_fingerprint(DATASETS.get(config["dataset"])),
    }
    if config.get("teacher"):
        parts["teacher"] = code_fingerprint(config["teacher"])["fingerprint"]
    combined = hashlib.sha256(repr(sorted((k, v) for k, v in parts.items())).encode()).hexdigest()[:16]
    return {**parts, "fingerprint": combined}


def changed_parts(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Which parts of the code differ ("engine", "method", "dataset", "teacher"); all when ``old`` is unknown."""
    if not old:
        return ["unrecorded"]
    return [k for k in ("engine", "method", "dataset", "teacher") if old.get(k) != new.get(k)]
