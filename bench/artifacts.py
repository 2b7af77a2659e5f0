"""A run's files next to its record: checkpoints (``last.pt``, ``best.pt``: torch, tensors only, loaded with
``weights_only=True``) and its explanation gallery (``gallery.npz``: plain numpy arrays, loaded without pickle,
so that reports render it without torch or model code)."""
from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.atomic import atomic_write_bytes
from bench.data import tensors_digest
from bench.errors import UserError
from bench.models import create_model

GALLERY_FILE = "gallery.npz"
GALLERY_KEYS = {"images", "labels", "groups", "kinds", "splits", "indices", "columns", "explainers", "preds", "maps"}


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any] | None:
    """A checkpoint this suite wrote (tensors and plain containers only: ``weights_only=True``), or None
    when it is missing or unreadable (truncated, foreign or tampered with)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as err:
        print(f"warning: checkpoint {path} is unreadable ({type(err).__name__}); ignoring it", file=sys.stderr)
        return None


def model_from_checkpoint(path: Path, model_name: str, whose: str) -> nn.Module:
    """The network kept in ``best.pt`` rebuilt on the CPU in eval mode; a missing or unreadable file is a
    UserError naming ``whose`` run it is."""
    state = load_checkpoint(path, torch.device("cpu"))
    if state is None:
        raise UserError(f"{whose} has no readable checkpoint {path}; re-run it to write one")
    model = create_model(model_name, state["num_classes"], state["in_channels"])
    model.load_state_dict(state["model"])
    return model.eval()


def save_gallery(path: Path, record: dict[str, Any]) -> None:
    """Write a gallery record (numpy arrays; strings as unicode arrays) atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{key: np.asarray(value) for key, value in record.items()})
    atomic_write_bytes(path, buffer.getvalue())


def read_gallery(path: Path) -> dict[str, np.ndarray] | None:
    """A saved gallery record, or None when it is missing, unreadable or incomplete (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            record = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError):
        return None
    return record if GALLERY_KEYS <= set(record) else None


def state_digest(state: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict's tensors (names, shapes, dtypes and bytes, in name order)."""
    return tensors_digest(sorted(state.items()))
