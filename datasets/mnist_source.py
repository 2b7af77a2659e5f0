"""The base MNIST digits: the embedded copy (offline) or torchvision's on-disk IDX files."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bench.errors import UserError

EMBEDDED_PATH = Path(__file__).resolve().parent / "data" / "mnist.npz"
SOURCES = ("embedded", "torchvision")
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
MNIST_FIX = "pass download=true with internet, or source=embedded"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def load_mnist(source: str = "embedded", root: str | None = None, download: bool = False) -> dict[str, Tensor]:
    """MNIST as uint8 tensors: ``train_images`` 60000×28×28, ``train_labels`` (int64), ``test_*`` likewise."""
    if source == "embedded":
        arrays = _read_embedded(EMBEDDED_PATH)
    elif source == "torchvision":
        arrays = _read_torchvision(root, download)
    else:
        raise UserError(f"unknown MNIST source {source!r}; valid: {', '.join(SOURCES)}")
    return idx_tensors(arrays, source)


def idx_tensors(arrays: dict[str, np.ndarray], source: str, dataset: str = "MNIST") -> dict[str, Tensor]:
    """Check an MNIST-format set of arrays (N×28×28 images, labels 0..9) and copy it into uint8/int64 tensors."""
    _check_consistent(arrays, source, dataset)
    # np.array copies: IDX arrays are read-only views of the file's bytes
    return {
        key: torch.from_numpy(np.array(arr, dtype=np.int64 if key.endswith("labels") else np.uint8))
        for key, arr in arrays.items()
    }


def _read_embedded(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise UserError(f"embedded MNIST file {path} is missing; restore it from git or use source=torchvision")
    try:
        with np.load(path, allow_pickle=False) as store:
            missing = [k for k in KEYS if k not in store.files]
            if missing:
                raise UserError(f"embedded MNIST file {path} lacks {missing[0]!r}; restore it from git")
            return {k: store[k] for k in KEYS}
    except UserError:
        raise
    except Exception as err:  # zip/npy corruption surfaces as many exception types
        raise UserError(
            f"embedded MNIST file {path} is unreadable ({type(err).__name__}); restore it from git"
        ) from None


def _read_torchvision(root: str | None, download: bool) -> dict[str, np.ndarray]:
    if root is None:
        raise UserError("source=torchvision needs root=<folder holding MNIST/raw>")
    raw = Path(root).expanduser() / "MNIST" / "raw"
    if download:
        _download(Path(root).expanduser())
    return read_idx_folder(raw)


def read_idx_folder(raw: Path, dataset: str = "MNIST", fix: str = MNIST_FIX) -> dict[str, np.ndarray]:
    """The four IDX files (``IDX_FILES``, each optionally gzipped) of an MNIST-format ``raw`` folder."""
    return {
        key: read_idx(_find_idx(raw, name, dataset, fix), _expected_magic(key), dataset)
        for key, name in IDX_FILES.items()
    }


def source_fingerprint(source: str, root: str | None) -> str:
    """What the digits were read from: the embedded file, or the size and mtime of each user IDX file
    (so that replacing a user's files invalidates cached datasets built from them)."""
    if source == "embedded":
        return "embedded"
    return idx_fingerprint(Path(root or ".").expanduser() / "MNIST" / "raw")


def idx_fingerprint(raw: Path) -> str:
    """Name, size and mtime of each IDX file present in ``raw`` (plain or .gz); "missing" when none is."""
    parts = []
    for name in IDX_FILES.values():
        for candidate in (raw / name, raw / f"{name}.gz"):
            if candidate.exists():
                stat = candidate.stat()
                parts.append(f"{candidate.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts) or "missing"


def _download(root: Path) -> None:
    """Let torchvision fetch (and unpack) the IDX files into ``root/MNIST/raw``; needs internet."""
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        raise UserError("download=true needs torchvision installed; or use source=embedded") from None
    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
    except Exception as err:
        raise UserError(f"MNIST download into {root} failed ({err}); use source=embedded offline") from None


def _expected_magic(key: str) -> int:
    return IMAGE_MAGIC if key.endswith("images") else LABEL_MAGIC


def _find_idx(raw: Path, name: str, dataset: str = "MNIST", fix: str = MNIST_FIX) -> Path:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise UserError(f"{dataset} file {raw / name} (or .gz) not found; {fix}")


def read_idx(path: Path, magic: int, dataset: str = "MNIST") -> np.ndarray:
    """Parse one IDX file (optionally gzipped) of unsigned bytes, checking its magic number and size."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"cannot read {dataset} file {path} ({err}); delete it and re-download") from None
    ndim = 3 if magic == IMAGE_MAGIC else 1
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{dataset} file {path} is truncated (header); delete it and re-download")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise UserError(
            f"{dataset} file {path} has magic number {found}, expected {magic}; delete it and re-download"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise UserError(
            f"{dataset} file {path} holds {len(data)} bytes, expected {expected} for shape {dims}; "
            "delete it and re-download"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _check_consistent(arrays: dict[str, np.ndarray], source: str, dataset: str = "MNIST") -> None:
    """Images are N×28×28, labels N classes 0..9, with matching N per part."""
    what = f"{dataset} ({source})"
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise UserError(f"{what} {part} images have shape {images.shape}, expected N×28×28")
        if labels.shape != (images.shape[0],):
            raise UserError(f"{what} has {images.shape[0]} {part} images but labels of shape {labels.shape}")
        if labels.size and int(labels.max()) > 9:
            raise UserError(f"{what} {part} labels go up to {int(labels.max())}, expected classes 0..9")
