"""How a container's forward combines its children, declared by the model code for the LRP engine.

The engine (``bench.explain.lrp``) imports no model: models register their structure where they are
defined (the pattern of timm's ``register_notrace_module``), e.g.::

    @lrp_chain
    class SmallCNN(nn.Module): ...

    @lrp_residual(activation="relu2", shortcut="downsample")
    class BasicBlock(nn.Module): ...

Kinds:

- ``chain``: the forward calls its children one after the other (glue such as flattening in between is
  allowed; branches are not);
- ``residual``: ``activation(main(x) + shortcut(x))``; ``activation`` names the submodule applied to the
  sum (its last call in the forward, so a ReLU module shared with the main branch is fine), ``shortcut``
  the submodule on the shortcut (absent or ``None`` at run time: the identity); every other call is the
  main branch, in call order; ``inplace_sum``: the forward adds in place (``out += identity``);
- ``concat``: ``x_k = cat(x_{k-1}, layer_k(x_{k-1}))`` over the children in order (a DenseNet block).

A class that is not importable at registration time (an optional library) can be registered by its full
name, ``"package.module.Class"``; no import happens until a module of that class is explained.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

Kind = Literal["chain", "residual", "concat"]
KINDS: tuple[str, ...] = ("chain", "residual", "concat")
T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class LrpStructure:
    """A registered structure (see the module docstring for the kinds and their fields)."""

    kind: Kind
    activation: str | None = None
    shortcut: str | None = None
    inplace_sum: bool = False


STRUCTURES: dict[type | str, LrpStructure] = {}
_RESOLVED: dict[type, LrpStructure | None] = {}  # per-class lookups (through the MRO), cleared on registration


def register_lrp_structure(cls: T | str, kind: Kind, *, activation: str | None = None, shortcut: str | None = None,
                           inplace_sum: bool = False) -> T | str:
    """Declare how ``cls``'s forward combines its children (``cls`` or its full name); returns ``cls``."""
    if kind not in KINDS:
        raise ValueError(f"unknown LRP structure kind {kind!r}; known: {', '.join(KINDS)}")
    if (kind == "residual") != (activation is not None):
        raise ValueError("a residual structure names its activation (the submodule applied to the sum), "
                         "and only a residual structure does")
    if kind != "residual" and (shortcut is not None or inplace_sum):
        raise ValueError("shortcut and inplace_sum describe residual structures only")
    STRUCTURES[cls] = LrpStructure(kind, activation, shortcut, inplace_sum)
    _RESOLVED.clear()
    return cls


def lrp_chain(cls: T) -> T:
    """Class decorator: ``cls``'s forward is a chain of its children."""
    register_lrp_structure(cls, "chain")
    return cls


def lrp_concat(cls: T) -> T:
    """Class decorator: ``cls``'s forward is DenseNet's ``x = cat(x, layer(x))`` over its children."""
    register_lrp_structure(cls, "concat")
    return cls


def lrp_residual(*, activation: str, shortcut: str | None = None, inplace_sum: bool = False) -> Callable[[T], T]:
    """Class decorator: ``cls``'s forward is ``activation(main(x) + shortcut(x))``."""

    def decorator(cls: T) -> T:
        register_lrp_structure(cls, "residual", activation=activation, shortcut=shortcut, inplace_sum=inplace_sum)
        return cls

    return decorator


def lrp_structure(cls: type) -> LrpStructure | None:
    """The structure registered for ``cls`` or its nearest registered base class (by class or by name)."""
    if cls not in _RESOLVED:
        _RESOLVED[cls] = None
        for base in cls.__mro__:
            found = STRUCTURES.get(base) or STRUCTURES.get(full_name(base))
            if found is not None:
                _RESOLVED[cls] = found
                break
    return _RESOLVED[cls]


def full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
