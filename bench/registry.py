"""Decorator registries (timm style): ``register_*`` / ``list_*`` / ``get_*`` / ``create_*``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from bench.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories; unknown names fail with one line listing the valid ones."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._broken: dict[str, str] = {}
        self._loader = loader
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            try:
                obj.registry_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def mark_broken(self, name: str, reason: str) -> None:
        """Record that ``name`` exists but cannot be loaded: ``get(name)`` raises ``reason`` (one line naming the
        fix) and every other name keeps working."""
        self._broken[name] = reason

    def broken(self) -> dict[str, str]:
        """Names that exist but cannot be loaded, with the reason."""
        self._ensure_loaded()
        return dict(sorted(self._broken.items()))

    def _ensure_loaded(self) -> None:
        if self._loader is not None and not self._loaded:
            self._loaded = True
            self._loader()

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._ensure_loaded()
        if name not in self._entries and name in self._broken:
            raise UserError(self._broken[name])
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names()) or '(none)'}"
            )
        return self._entries[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries


def import_all_modules(package: str) -> None:
    """Import every module of ``package`` so that its decorators register (no central list to edit)."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
