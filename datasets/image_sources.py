"""Real image files users already have: Fashion-MNIST (IDX), CIFAR-10 (three layouts) and Waterbirds.

Every loader reads local files and returns uint8 image tensors; nothing is downloaded unless the caller passes
``download=True``. CIFAR-10's Python batches are pickles: they are read with a restricted unpickler that accepts
numpy arrays, dicts, lists and bytes only, so a tampered file cannot run code.

``python -m datasets.image_sources unpack-cifar10 NPZ OUT`` unpacks the project's JPEG export of CIFAR-10 into the
class-per-folder layout.
"""
from __future__ import annotations

import argparse
import codecs
import csv
import functools
import hashlib
import importlib
import io
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor

from bench.errors import UserError
from datasets.mnist_source import idx_fingerprint, idx_tensors, read_idx_folder

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_PY_DIR = "cifar-10-batches-py"
CIFAR_BIN_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_SIDE = 32
CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CIFAR_LAYOUTS = (
    f"(a) {CIFAR_PY_DIR}/ with data_batch_1..5 and test_batch (torchvision's download)",
    f"(b) {CIFAR_BIN_DIR}/ with data_batch_1..5.bin and test_batch.bin",
    "(c) train/<class>/*.png|jpg and test/<class>/*.png|jpg with the 10 CIFAR-10 class names as folders",
)
WATERBIRDS_SPLITS = {0: "train", 1: "val", 2: "test"}
WATERBIRDS_COLUMNS = ("img_filename", "y", "split", "place")
NPZ_SPLITS = ("train", "test")


# --- Fashion-MNIST ------------------------------------------------------------------------------------------


def load_fashion_mnist(root: str, download: bool = False) -> dict[str, Tensor]:
    """Fashion-MNIST from ``root/FashionMNIST/raw`` (torchvision's layout, files optionally .gz) as uint8 tensors:
    ``train_images`` 60000×28×28, ``train_labels`` (int64), ``test_*`` likewise; ``download`` fetches it first."""
    base = Path(root).expanduser()
    if download:
        _torchvision_download("FashionMNIST", base, both_splits=True)
    fix = f"put torchvision's Fashion-MNIST files in {base / 'FashionMNIST' / 'raw'}, or pass download=true"
    arrays = read_idx_folder(base / "FashionMNIST" / "raw", dataset="Fashion-MNIST", fix=fix)
    return idx_tensors(arrays, "torchvision", dataset="Fashion-MNIST")


def fashion_mnist_fingerprint(root: str) -> str:
    """Name, size and mtime of each Fashion-MNIST IDX file under ``root`` ("missing" when there are none)."""
    return idx_fingerprint(Path(root).expanduser() / "FashionMNIST" / "raw")


# --- CIFAR-10 -------------------------------------------------------------------------------------------------


def load_cifar10(root: str, download: bool = False) -> dict[str, Tensor]:
    """CIFAR-10 under ``root`` in any of ``CIFAR_LAYOUTS``: ``train_images`` 50000×3×32×32 uint8,
    ``train_labels`` int64, ``test_*`` likewise; ``download`` lets torchvision fetch layout (a) first."""
    base = Path(root).expanduser()
    if download:
        _torchvision_download("CIFAR10", base, both_splits=False)
    layout, files = _cifar10_files(base)
    readers: dict[str, Callable[[list[Path]], tuple[np.ndarray, np.ndarray]]] = {
        "py": _read_cifar_pickles, "bin": _read_cifar_binary, "folders": _read_cifar_folders,
    }
    out: dict[str, Tensor] = {}
    for split in ("train", "test"):
        images, labels = readers[layout]([f for f in files if _split_of(base, f, layout) == split])
        if len(images) == 0:
            raise UserError(f"CIFAR-10 {split} split under {base} holds no images; restore its files")
        if labels.max() > 9:
            raise UserError(f"CIFAR-10 {split} labels under {base} go up to {labels.max()}, expected 0..9; "
                            "the files are corrupt, re-download them")
        out[f"{split}_images"] = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        out[f"{split}_labels"] = torch.from_numpy(labels.astype(np.int64))
    return out


def cifar10_fingerprint(root: str) -> str:
    """The layout found under ``root`` and a hash of the names, sizes and mtimes of the files it reads, so that
    replacing any of them changes the fingerprint; "missing" when no layout is found."""
    try:
        layout, files = _cifar10_files(Path(root).expanduser())
    except UserError:
        return "missing"
    return f"cifar10-{layout}:{len(files)}:{_files_digest(files)}"


def _cifar10_files(base: Path) -> tuple[str, list[Path]]:
    """Detect the layout under ``base`` (in the order a, b, c) and list the files it reads, train before test."""
    py, binary = base / CIFAR_PY_DIR, base / CIFAR_BIN_DIR
    if py.is_dir():
        return "py", [_required(py / name) for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH)]
    if binary.is_dir():
        return "bin", [_required(binary / f"{name}.bin") for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH)]
    if (base / "train").is_dir() and (base / "test").is_dir():
        return "folders", [f for split in ("train", "test") for f in _class_folder_files(base / split)]
    raise UserError(
        f"no CIFAR-10 files found under {base}; expected one of: {'; '.join(CIFAR_LAYOUTS)} "
        "(or pass download=true with internet)"
    )


def _required(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"CIFAR-10 file {path} not found; restore the folder's files, or pass download=true")
    return path


def _split_of(base: Path, path: Path, layout: str) -> str:
    if layout == "folders":
        return path.relative_to(base).parts[0]
    return "test" if path.name.startswith(CIFAR_TEST_BATCH) else "train"


def _class_folder_files(split_dir: Path) -> list[Path]:
    """Image files of one split of layout (c), ordered by CIFAR-10 class index, then by file name."""
    folders: dict[int, Path] = {}
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        name = entry.name.lower()
        if name not in CIFAR10_CLASSES:
            raise UserError(f"unexpected folder {entry} in a CIFAR-10 class-per-folder layout; "
                            f"class folders must be named {', '.join(CIFAR10_CLASSES)}")
        index = CIFAR10_CLASSES.index(name)
        if index in folders:
            raise UserError(f"CIFAR-10 class {name!r} has two folders in {split_dir}: "
                            f"{folders[index].name} and {entry.name}; merge them")
        folders[index] = entry
    missing = [CIFAR10_CLASSES[k] for k in range(len(CIFAR10_CLASSES)) if k not in folders]
    if missing:
        raise UserError(f"CIFAR-10 folder {split_dir} lacks the class folder {missing[0]!r}; "
                        "every split needs one folder per class")
    return [
        f for k in sorted(folders) for f in sorted(folders[k].iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and f.is_file()
    ]


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals that numpy arrays, dicts, lists and bytes need; anything else is refused."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals()
        if (module, name) not in allowed:
            raise UserError(f"refusing to load {self.path}: it contains Python objects other than arrays "
                            f"({module}.{name}); use the original CIFAR-10 files")
        return allowed[(module, name)]


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """numpy's array reconstruction functions (both module spellings), ndarray, dtype and the bytes helpers."""
    try:  # numpy >= 2 (numpy.core is a deprecated alias there)
        multiarray, numeric = (importlib.import_module(f"numpy._core.{m}") for m in ("multiarray", "numeric"))
    except ImportError:  # numpy 1.x
        multiarray, numeric = (importlib.import_module(f"numpy.core.{m}") for m in ("multiarray", "numeric"))
    reconstruct, frombuffer = multiarray._reconstruct, numeric._frombuffer
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core", "numpy._core"):
        table[(f"{module}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{module}.numeric", "_frombuffer")] = frombuffer
    for name, value in (("bytes", bytes), ("bytearray", bytearray), ("list", list), ("dict", dict)):
        table[("builtins", name)] = value
        table[("__builtin__", name)] = value
    table[("_codecs", "encode")] = _latin1_encode  # how protocol-2 pickles written by Python 3 store bytes
    return table


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _unpickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One torchvision CIFAR batch: a dict with ``data`` (N×3072 uint8) and ``labels`` (N ints), keys as bytes."""
    fix = "delete the folder and re-download CIFAR-10"
    try:
        with path.open("rb") as handle:
            batch = _ArrayUnpickler(handle, path).load()
    except UserError:
        raise
    except Exception as err:  # truncated or garbled pickles raise many exception types
        raise UserError(f"CIFAR-10 batch {path} is unreadable ({type(err).__name__}: {err}); {fix}") from None
    if not isinstance(batch, dict):
        raise UserError(f"CIFAR-10 batch {path} holds a {type(batch).__name__}, expected a dict; {fix}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        shape = getattr(data, "shape", None)
        raise UserError(f"CIFAR-10 batch {path} has no uint8 'data' of shape N×{CIFAR_PIXELS} (got {shape}); {fix}")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        label_array = np.zeros(0, dtype=np.int64)
    if label_array.shape != (len(data),) or (label_array.size and label_array.min() < 0):
        raise UserError(f"CIFAR-10 batch {path} has {len(data)} images but no matching 'labels' list; {fix}")
    return data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), label_array


def _read_cifar_pickles(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_unpickle_batch(p) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _read_cifar_binary(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Records of 1 label byte followed by 3072 pixel bytes (R, G, B planes, row-major)."""
    records = []
    for path in paths:
        try:
            raw = np.fromfile(path, dtype=np.uint8)
        except OSError as err:
            raise UserError(f"cannot read CIFAR-10 file {path} ({err}); re-download it") from None
        if raw.size % (CIFAR_PIXELS + 1):
            raise UserError(f"CIFAR-10 file {path} holds {raw.size} bytes, not a whole number of "
                            f"{CIFAR_PIXELS + 1}-byte records; it is truncated, re-download it")
        records.append(raw.reshape(-1, CIFAR_PIXELS + 1))
    table = np.concatenate(records)
    return table[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), table[:, 0].astype(np.int64)


def _read_cifar_folders(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Decode each 32×32 image (any mode, converted to RGB); the label is its class folder."""
    images = np.empty((len(paths), CIFAR_SIDE, CIFAR_SIDE, 3), dtype=np.uint8)
    labels = np.empty(len(paths), dtype=np.int64)
    for i, path in enumerate(paths):
        image = _decode_rgb(path)
        if image.shape[:2] != (CIFAR_SIDE, CIFAR_SIDE):
            raise UserError(f"CIFAR-10 image {path} is {image.shape[1]}×{image.shape[0]}, expected 32×32; "
                            "replace it with the original 32×32 image")
        images[i] = image
        labels[i] = CIFAR10_CLASSES.index(path.parent.name.lower())
    return images.transpose(0, 3, 1, 2), labels


def _decode_rgb(path: Path) -> np.ndarray:
    """An image file as an H×W×3 uint8 array."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise UserError(f"cannot decode image {path} ({type(err).__name__}); replace or delete the file") from None


# --- Waterbirds -----------------------------------------------------------------------------------------------


def load_waterbirds(root: str, size: int) -> dict[str, dict[str, Tensor]]:
    """Waterbirds from ``root/metadata.csv`` (columns img_filename, y, split, place): for each split (train, val,
    test) ``images`` N×3×size×size uint8 (shorter side resized to ``size`` with antialiasing, then centre-cropped),
    ``y`` (0 landbird, 1 waterbird) and ``place`` (0 land, 1 water), both int64."""
    if size < 1:
        raise UserError(f"Waterbirds image size must be >= 1, got {size}")
    base = Path(root).expanduser()
    rows = _waterbirds_rows(base)
    missing = next((r[0] for r in rows if not (base / r[0]).is_file()), None)
    if missing is not None:
        raise UserError(f"Waterbirds image {base / missing} (listed in metadata.csv) not found; "
                        "restore the dataset's image folders under root")
    out: dict[str, dict[str, Tensor]] = {}
    for code, split in WATERBIRDS_SPLITS.items():
        part = [r for r in rows if r[2] == code]
        images = [_resize_crop(base / r[0], size) for r in part]
        out[split] = {
            "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
            if images else torch.zeros((0, 3, size, size), dtype=torch.uint8),
            "y": torch.tensor([r[1] for r in part], dtype=torch.int64),
            "place": torch.tensor([r[3] for r in part], dtype=torch.int64),
        }
    return out


def waterbirds_fingerprint(root: str) -> str:
    """metadata.csv's size and mtime and the number of files under ``root``; "missing" without metadata.csv."""
    base = Path(root).expanduser()
    meta = base / "metadata.csv"
    if not meta.is_file():
        return "missing"
    stat = meta.stat()
    count = sum(len(names) for _, _, names in os.walk(base))
    return f"waterbirds:{stat.st_size}:{stat.st_mtime_ns}:{count} files"


def _waterbirds_rows(base: Path) -> list[tuple[str, int, int, int]]:
    """(img_filename, y, split, place) for each row of metadata.csv, checked."""
    meta = base / "metadata.csv"
    if not meta.is_file():
        raise UserError(f"Waterbirds metadata {meta} not found; root must be the folder holding metadata.csv "
                        "(e.g. waterbird_complete95_forest2water2)")
    try:
        with meta.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            lacking = [c for c in WATERBIRDS_COLUMNS if c not in columns]
            if lacking:
                raise UserError(f"Waterbirds metadata {meta} lacks the column {lacking[0]!r} "
                                f"(needs {', '.join(WATERBIRDS_COLUMNS)}); use the dataset's original metadata.csv")
            reader.fieldnames = columns
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read Waterbirds metadata {meta} ({err}); restore the original file") from None
    rows = []
    allowed = {"y": (0, 1), "split": tuple(WATERBIRDS_SPLITS), "place": (0, 1)}
    for line, record in enumerate(records, start=2):
        values: dict[str, int] = {}
        for column, valid in allowed.items():
            text = (record.get(column) or "").strip()
            values[column] = _small_int(text)
            if values[column] not in valid:
                raise UserError(f"Waterbirds metadata {meta} line {line}: {column}={text!r}, expected one of "
                                f"{', '.join(map(str, valid))}; use the dataset's original metadata.csv")
        filename = (record.get("img_filename") or "").strip()
        if not filename:
            raise UserError(f"Waterbirds metadata {meta} line {line} has an empty img_filename; fix that row")
        rows.append((filename, values["y"], values["split"], values["place"]))
    if not rows:
        raise UserError(f"Waterbirds metadata {meta} has no rows; use the dataset's original metadata.csv")
    return rows


def _small_int(text: str) -> int:
    """``text`` as an int ("1" or "1.0"), or -1 when it is not a whole number."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return -1
    return int(value) if value.is_integer() else -1


def _resize_crop(path: Path, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear, antialiased) and centre-crop size×size, as torchvision's
    ``Resize(size)`` + ``CenterCrop(size)`` do on a PIL image; returns size×size×3 uint8."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot decode image {path} ({type(err).__name__}); replace the file") from None
    width, height = rgb.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    if new_size != rgb.size:
        rgb = rgb.resize(new_size, Image.Resampling.BILINEAR)
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    return np.asarray(rgb.crop((left, top, left + size, top + size)))


# --- downloads, fingerprints --------------------------------------------------------------------------------


def _torchvision_download(name: str, root: Path, both_splits: bool) -> None:
    """Let torchvision fetch dataset ``name`` into ``root`` (needs internet); only called with download=True."""
    try:
        tv_datasets = importlib.import_module("torchvision.datasets")
    except ImportError:
        raise UserError(f"download=true needs torchvision installed; or put the {name} files under {root}") from None
    try:
        for train in (True, False) if both_splits else (True,):
            getattr(tv_datasets, name)(str(root), train=train, download=True)
    except Exception as err:
        raise UserError(f"{name} download into {root} failed ({err}); put the files there by hand") from None


def _files_digest(files: Sequence[Path]) -> str:
    """A short hash of each file's path (relative to its grandparent), size and mtime."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.parent.parent.name}/{path.parent.name}/{path.name}:{stat.st_size}:"
                      f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# --- unpacking the project's JPEG export ---------------------------------------------------------------------


def unpack_jpeg_npz(npz_path: str, out_root: str) -> None:
    """Write the JPEG export ``npz_path`` (``{split}_jpeg``, ``{split}_offsets``, ``{split}_labels``) as
    ``out_root/{split}/{class}/{index:05d}.jpg`` (bytes as stored), via a temporary folder renamed at the end."""
    source, target = Path(npz_path).expanduser(), Path(out_root).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} already exists and is not an empty folder; delete it or choose another OUT")
    splits = _read_jpeg_npz(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        for split, (blob, offsets, labels) in splits.items():
            for name in CIFAR10_CLASSES:
                (staging / split / name).mkdir(parents=True)
            for i, label in enumerate(labels.tolist()):
                path = staging / split / CIFAR10_CLASSES[label] / f"{i:05d}.jpg"
                path.write_bytes(blob[offsets[i]:offsets[i + 1]].tobytes())
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _read_jpeg_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each split's (JPEG bytes, offsets, labels), checked for consistency."""
    fix = "use the project's shared cifar10_jpeg.npz unchanged"
    if not path.is_file():
        raise UserError(f"npz file {path} not found; pass the path of cifar10_jpeg.npz")
    try:
        with np.load(path, allow_pickle=False) as store:
            lacking = [f"{s}_{k}" for s in NPZ_SPLITS for k in ("jpeg", "offsets", "labels")
                       if f"{s}_{k}" not in store.files]
            if lacking:
                raise UserError(f"npz file {path} lacks {lacking[0]!r}; {fix}")
            arrays = {s: (store[f"{s}_jpeg"], store[f"{s}_offsets"], store[f"{s}_labels"]) for s in NPZ_SPLITS}
    except UserError:
        raise
    except Exception as err:  # zip/npy corruption, or pickled object arrays refused by allow_pickle=False
        raise UserError(f"npz file {path} is unreadable ({type(err).__name__}: {err}); {fix}") from None
    for split, (blob, offsets, labels) in arrays.items():
        n = len(labels)
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise UserError(f"npz file {path}: {split}_jpeg is {blob.dtype} {blob.shape}, expected 1-D uint8; {fix}")
        if offsets.shape != (n + 1,) or labels.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer):
            raise UserError(f"npz file {path}: {split}_offsets has shape {offsets.shape}, expected ({n + 1},); {fix}")
        if n and (offsets[0] != 0 or offsets[-1] != blob.size or bool((np.diff(offsets) <= 0).any())):
            raise UserError(f"npz file {path}: {split}_offsets are not increasing from 0 to {blob.size}; {fix}")
        if not np.issubdtype(labels.dtype, np.integer) or (n and (labels.min() < 0 or labels.max() > 9)):
            raise UserError(f"npz file {path}: {split}_labels are not classes 0..9; {fix}")
        arrays[split] = (blob, offsets.astype(np.int64), labels.astype(np.int64))
    return arrays


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one ``error:`` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} -h)", file=sys.stderr)
        sys.exit(UserError.exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    """``unpack-cifar10 NPZ OUT``; errors print one line and return exit code 2."""
    parser = _OneLineParser(prog="python -m datasets.image_sources", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    unpack = commands.add_parser("unpack-cifar10", help="unpack cifar10_jpeg.npz into OUT/{train,test}/<class>/")
    unpack.add_argument("npz", help="the JPEG export, e.g. shared/data/cifar10/cifar10_jpeg.npz")
    unpack.add_argument("out", help="folder to create (must not exist, or be empty)")
    args = parser.parse_args(argv)
    try:
        unpack_jpeg_npz(args.npz, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return UserError.exit_code
    except OSError as err:
        print(f"error: cannot write {args.out} ({err}); check the folder and free disk space", file=sys.stderr)
        return UserError.exit_code
    print(f"unpacked {args.npz} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
