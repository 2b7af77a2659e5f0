"""Typed configs from user values: unknown keys and bad values fail with one clear line."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from typing import Any, TypeVar

from bench.errors import UserError

D = TypeVar("D")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a user value (often a CLI string) to the field's declared type."""
    _reject_non_finite(value, where)
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation, Any)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        annotation = args[0] if len(args) == 1 else Any
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "0", "false", "no"}:
            return value.lower() in {"1", "true", "yes"}
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UserError(f"{where} must be true or false, got {value!r}")
    if annotation in (int, float):
        return _number(value, annotation, where)
    if annotation is str:
        return str(value)
    return value


def _number(value: Any, kind: type, where: str) -> int | float:
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf")), float(10**400)
        raise UserError(f"{where} must be a number ({kind.__name__}), got {value!r}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise UserError(f"{where} must be an integer, got {value!r}")
    if isinstance(number, float) and not math.isfinite(number):  # "inf", "nan", "1e999"
        raise UserError(f"{where} must be a finite number, got {value!r}")
    return number


def _reject_non_finite(value: Any, where: str) -> None:
    """NaN and infinities are never a meaningful setting, and JSON (the store) cannot hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for item in value.values():
            _reject_non_finite(item, where)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _reject_non_finite(item, where)


def _resolved_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - forward refs we cannot resolve
        return {f.name: f.type for f in dataclasses.fields(cls)}


def build_dataclass(cls: type[D], values: dict[str, Any], what: str) -> D:
    """Instantiate dataclass ``cls`` from ``values``, rejecting unknown keys with the valid ones listed."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown {what} {unknown[0]!r}; valid: {', '.join(sorted(fields))}")
    hints = _resolved_hints(cls)
    kwargs = {k: _coerce(v, hints.get(k, Any), f"{what} {k!r}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"bad {what}: {err}") from None


def parse_assignments(items: list[str] | None, what: str) -> dict[str, str]:
    """Parse CLI ``key=value`` pairs."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {item!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


def canonical_json(obj: Any) -> str:
    """Stable JSON of ``obj``; NaN and infinities raise ``ValueError`` (they are not JSON)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)


def config_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
