"""Real-file loaders of datasets/image_sources.py, on tiny files written here (CPU, a few seconds)."""
from __future__ import annotations

import csv
import gzip
import io
import os
import pickle
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import UserError
from datasets.image_sources import (
    CIFAR10_CLASSES,
    FASHION_CLASSES,
    cifar10_fingerprint,
    fashion_mnist_fingerprint,
    load_cifar10,
    load_fashion_mnist,
    load_waterbirds,
    main,
    unpack_jpeg_npz,
    waterbirds_fingerprint,
)
from datasets.mnist_source import IDX_FILES

REPO = Path(__file__).resolve().parent.parent


# --- tiny CIFAR-10 in the three layouts ---------------------------------------------------------------------


def tiny_cifar(seed: int = 0) -> dict[str, np.ndarray]:
    """10 train images (one per class, in class order: layout (c) reads class by class) and 3 test images."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8),
        "train_labels": np.arange(10, dtype=np.int64),
        "test_images": rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8),
        "test_labels": np.array([0, 3, 9], dtype=np.int64),
    }


PurePickler: Any = pickle._Pickler  # type: ignore[attr-defined]  # the pure-Python pickler, whose dispatch is a dict


class Py2Pickler(PurePickler):
    """Writes str and bytes as Python 2 strings (BINSTRING), as the cPickle that wrote CIFAR-10's batches did."""

    dispatch = dict(PurePickler.dispatch)

    def save_py2_string(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1.x (which wrote the real files) named the module numpy.core; GLOBAL opcodes are plain text lines
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_layout_py(root: Path, arrays: dict[str, np.ndarray], py2: bool = True) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = np.array_split(arrays["train_images"], 5), np.array_split(arrays["train_labels"], 5)
    batches = [(f"data_batch_{k + 1}", train_x[k], train_y[k]) for k in range(5)]
    for name, images, labels in [*batches, ("test_batch", arrays["test_images"], arrays["test_labels"])]:
        batch = {"batch_label": f"{name} of 5", "labels": labels.tolist(),
                 "data": images.reshape(len(images), -1), "filenames": [f"{i}.png" for i in range(len(images))]}
        if py2:
            (folder / name).write_bytes(py2_pickle(batch))
        else:  # what a user re-saving the batches with Python 3 would write
            (folder / name).write_bytes(pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=2))
    (folder / "batches.meta").write_bytes(py2_pickle({"label_names": list(CIFAR10_CLASSES)}))


def write_layout_bin(root: Path, arrays: dict[str, np.ndarray]) -> None:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    train_x, train_y = np.array_split(arrays["train_images"], 5), np.array_split(arrays["train_labels"], 5)
    parts = [(f"data_batch_{k + 1}.bin", train_x[k], train_y[k]) for k in range(5)]
    for name, images, labels in [*parts, ("test_batch.bin", arrays["test_images"], arrays["test_labels"])]:
        records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())


def write_layout_folders(root: Path, arrays: dict[str, np.ndarray], fmt: str = "PNG") -> None:
    for split in ("train", "test"):
        for k, name in enumerate(CIFAR10_CLASSES):
            (root / split / (name.upper() if k == 1 else name)).mkdir(parents=True)  # folder names ignore case
        for i, (image, label) in enumerate(zip(arrays[f"{split}_images"], arrays[f"{split}_labels"], strict=True)):
            name = CIFAR10_CLASSES[label].upper() if label == 1 else CIFAR10_CLASSES[label]
            suffix = "png" if fmt == "PNG" else "jpg"
            Image.fromarray(image.transpose(1, 2, 0)).save(root / split / name / f"{i:05d}.{suffix}", fmt)


def assert_matches(loaded: dict[str, torch.Tensor], arrays: dict[str, np.ndarray]) -> None:
    assert set(loaded) == set(arrays)
    for key, array in arrays.items():
        assert loaded[key].dtype == (torch.int64 if key.endswith("labels") else torch.uint8), key
        assert torch.equal(loaded[key], torch.from_numpy(array)), key


@pytest.mark.parametrize("layout", ["py", "py3", "bin", "folders"])
def test_cifar10_layouts_give_identical_tensors(tmp_path: Path, layout: str) -> None:
    arrays = tiny_cifar()
    writers = {"py": write_layout_py, "py3": lambda r, a: write_layout_py(r, a, py2=False),
               "bin": write_layout_bin, "folders": write_layout_folders}
    writers[layout](tmp_path, arrays)
    loaded = load_cifar10(str(tmp_path))
    assert loaded["train_images"].shape == (10, 3, 32, 32) and loaded["train_images"].is_contiguous()
    assert_matches(loaded, arrays)


def test_cifar10_layout_detection_order(tmp_path: Path) -> None:
    write_layout_bin(tmp_path, tiny_cifar(seed=1))
    write_layout_folders(tmp_path, tiny_cifar(seed=2))
    assert_matches(load_cifar10(str(tmp_path)), tiny_cifar(seed=1))  # (b) before (c)
    write_layout_py(tmp_path, tiny_cifar(seed=0))
    assert_matches(load_cifar10(str(tmp_path)), tiny_cifar(seed=0))  # (a) before (b)


def test_class_folders_convert_modes_and_skip_other_files(tmp_path: Path) -> None:
    arrays = tiny_cifar()
    write_layout_folders(tmp_path, arrays)
    grey = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(grey, "L").save(tmp_path / "test" / "truck" / "zz_grey.PNG")
    (tmp_path / "test" / "truck" / "notes.txt").write_text("not an image")
    (tmp_path / "test" / "truck" / ".hidden.png").write_bytes(b"junk")
    loaded = load_cifar10(str(tmp_path))
    assert loaded["test_labels"].tolist() == [0, 3, 9, 9]
    assert torch.equal(loaded["test_images"][-1], torch.from_numpy(grey).expand(3, 32, 32))


def test_cifar10_missing_and_corrupt_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no CIFAR-10 files.*cifar-10-batches-py.*cifar-10-batches-bin.*train/<cl"):
        load_cifar10(str(tmp_path))
    arrays = tiny_cifar()
    write_layout_bin(tmp_path / "bin", arrays)
    batch = tmp_path / "bin" / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated"):
        load_cifar10(str(tmp_path / "bin"))
    batch.unlink()
    with pytest.raises(UserError, match="data_batch_3.bin not found"):
        load_cifar10(str(tmp_path / "bin"))

    write_layout_py(tmp_path / "py", arrays)
    batch = tmp_path / "py" / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(UserError, match="test_batch is unreadable.*re-download"):
        load_cifar10(str(tmp_path / "py"))
    batch.write_bytes(py2_pickle({"data": np.zeros((2, 10), dtype=np.uint8), "labels": [0, 1]}))
    with pytest.raises(UserError, match="N×3072"):
        load_cifar10(str(tmp_path / "py"))
    batch.write_bytes(py2_pickle({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0]}))
    with pytest.raises(UserError, match="labels"):
        load_cifar10(str(tmp_path / "py"))
    batch.write_bytes(py2_pickle({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 12]}))
    with pytest.raises(UserError, match="up to 12"):
        load_cifar10(str(tmp_path / "py"))


def test_class_folder_errors_name_the_file(tmp_path: Path) -> None:
    write_layout_folders(tmp_path, tiny_cifar())
    big = tmp_path / "train" / "cat" / "big.png"
    Image.new("RGB", (33, 32)).save(big)
    with pytest.raises(UserError, match=r"big\.png is 33×32, expected 32×32"):
        load_cifar10(str(tmp_path))
    big.write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot decode image .*big\.png"):
        load_cifar10(str(tmp_path))
    big.unlink()
    (tmp_path / "test" / "cats").mkdir()
    with pytest.raises(UserError, match="unexpected folder .*cats"):
        load_cifar10(str(tmp_path))
    (tmp_path / "test" / "cats").rmdir()
    (tmp_path / "test" / "ship").rmdir()
    with pytest.raises(UserError, match="lacks the class folder 'ship'"):
        load_cifar10(str(tmp_path))


class Exploit:
    """Unpickling this would run a shell command (what a tampered CIFAR-10 batch could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


class EvalExploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return eval, ("__import__('os').getpid()",)


@pytest.mark.parametrize("nested", [False, True])
def test_restricted_unpickler_refuses_code(tmp_path: Path, nested: bool) -> None:
    arrays = tiny_cifar()
    write_layout_py(tmp_path, arrays)
    marker = tmp_path / "pwned"
    payload: object = Exploit(marker)
    if nested:
        payload = {b"data": arrays["test_images"].reshape(3, -1), b"labels": [EvalExploit(), Exploit(marker)]}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(UserError, match="refusing to load .*test_batch: it contains Python objects other than arr"):
        load_cifar10(str(tmp_path))
    assert not marker.exists()


def test_cifar10_fingerprint_tracks_files(tmp_path: Path) -> None:
    assert cifar10_fingerprint(str(tmp_path)) == "missing"
    write_layout_folders(tmp_path, tiny_cifar())
    first = cifar10_fingerprint(str(tmp_path))
    assert first.startswith("cifar10-folders:13:") and cifar10_fingerprint(str(tmp_path)) == first
    image = tmp_path / "train" / "dog" / "00005.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = cifar10_fingerprint(str(tmp_path))
    assert second != first
    write_layout_bin(tmp_path, tiny_cifar())
    assert cifar10_fingerprint(str(tmp_path)).startswith("cifar10-bin:6:")


# --- downloads only when asked ------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """torchvision's dataset classes and sockets fail if used; download calls are recorded instead."""
    import torchvision.datasets

    calls: list[tuple[str, dict[str, Any]]] = []

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to open a network connection")

    def fake(name: str) -> Any:
        def dataset(root: str, train: bool = True, download: bool = False) -> None:
            calls.append((name, {"root": root, "train": train, "download": download}))
            if not download:
                raise AssertionError(f"{name} constructed without download=True")
            if name == "FashionMNIST" and not (Path(root) / "FashionMNIST").exists():
                write_fashion(Path(root))
            if name == "CIFAR10" and not (Path(root) / "cifar-10-batches-py").exists():
                write_layout_py(Path(root), tiny_cifar())
        return dataset

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake("FashionMNIST"))
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake("CIFAR10"))
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return calls


def test_no_download_unless_asked(tmp_path: Path, offline: list[tuple[str, dict[str, Any]]]) -> None:
    with pytest.raises(UserError, match="download=true"):
        load_cifar10(str(tmp_path / "c"))
    with pytest.raises(UserError, match="download=true"):
        load_fashion_mnist(str(tmp_path / "f"))
    write_layout_bin(tmp_path / "c", tiny_cifar())
    write_fashion(tmp_path / "f")
    load_cifar10(str(tmp_path / "c"))
    load_fashion_mnist(str(tmp_path / "f"))
    assert offline == []


def test_download_when_asked_uses_torchvision(tmp_path: Path, offline: list[tuple[str, dict[str, Any]]]) -> None:
    assert_matches(load_cifar10(str(tmp_path / "c"), download=True), tiny_cifar())
    fashion = load_fashion_mnist(str(tmp_path / "f"), download=True)
    assert fashion["train_images"].shape == (20, 28, 28)
    assert [(name, kw["train"], kw["download"]) for name, kw in offline] == [
        ("CIFAR10", True, True), ("FashionMNIST", True, True), ("FashionMNIST", False, True)]


def test_failed_download_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading cifar-10-python.tar.gz")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", broken)
    with pytest.raises(UserError, match="CIFAR10 download into .* failed"):
        load_cifar10(str(tmp_path), download=True)


# --- Fashion-MNIST -------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(root: Path, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    arrays: dict[str, np.ndarray] = {
        "train_images": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(20) % 10).astype(np.int64),
        "test_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(10)[::-1] % 10).astype(np.int64),
    }
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for key, name in IDX_FILES.items():
        data = idx_bytes(arrays[key], 2051 if key.endswith("images") else 2049)
        (raw / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    arrays = write_fashion(tmp_path, gz=gz)
    assert_matches(load_fashion_mnist(str(tmp_path)), arrays)
    assert len(FASHION_CLASSES) == 10 and FASHION_CLASSES[9] == "Ankle boot"


def test_fashion_mnist_errors_and_fingerprint(tmp_path: Path) -> None:
    assert fashion_mnist_fingerprint(str(tmp_path)) == "missing"
    with pytest.raises(UserError, match=r"Fashion-MNIST file .*FashionMNIST/raw/train-images-idx3-ubyte .*download"):
        load_fashion_mnist(str(tmp_path))
    write_fashion(tmp_path)
    first = fashion_mnist_fingerprint(str(tmp_path))
    assert first.count(":") == 8  # name:size:mtime for each of the four files
    path = tmp_path / "FashionMNIST" / "raw" / IDX_FILES["test_labels"]
    path.write_bytes((2051).to_bytes(4, "big") + path.read_bytes()[4:])
    with pytest.raises(UserError, match="Fashion-MNIST file .*magic number 2051, expected 2049.*re-download"):
        load_fashion_mnist(str(tmp_path))
    path.write_bytes(idx_bytes(np.full(10, 11), 2049))
    with pytest.raises(UserError, match="labels go up to 11"):
        load_fashion_mnist(str(tmp_path))
    path.write_bytes(idx_bytes(np.zeros(9), 2049))
    assert fashion_mnist_fingerprint(str(tmp_path)) != first  # size changed
    with pytest.raises(UserError, match="10 test images but labels of shape"):
        load_fashion_mnist(str(tmp_path))


# --- the JPEG export unpacker --------------------------------------------------------------------------------


def jpeg_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=75)
    return buffer.getvalue()


def write_jpeg_npz(path: Path) -> dict[str, tuple[list[bytes], list[int]]]:
    content = {"train": ([jpeg_bytes(i) for i in range(6)], [0, 0, 4, 4, 9, 9]),
               "test": ([jpeg_bytes(10 + i) for i in range(3)], [1, 2, 2])}
    arrays: dict[str, np.ndarray] = {}
    for split, (files, labels) in content.items():
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(files), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(f) for f in files]).astype(np.int64)
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.uint8)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return content


def test_unpack_jpeg_npz_roundtrip(tmp_path: Path) -> None:
    content = write_jpeg_npz(tmp_path / "export.npz")
    out = tmp_path / "out" / "cifar10"
    unpack_jpeg_npz(str(tmp_path / "export.npz"), str(out))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cifar10"]  # no staging folder left behind
    for split, (files, labels) in content.items():
        for i, (data, label) in enumerate(zip(files, labels, strict=True)):
            assert (out / split / CIFAR10_CLASSES[label] / f"{i:05d}.jpg").read_bytes() == data
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(CIFAR10_CLASSES)
    loaded = load_cifar10(str(out))
    for split, (files, labels) in content.items():
        assert loaded[f"{split}_labels"].tolist() == labels
        decoded = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files])
        assert torch.equal(loaded[f"{split}_images"], torch.from_numpy(decoded.transpose(0, 3, 1, 2)))
    with pytest.raises(UserError, match="already exists"):
        unpack_jpeg_npz(str(tmp_path / "export.npz"), str(out))


def test_unpack_jpeg_npz_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="not found"):
        unpack_jpeg_npz(str(tmp_path / "nope.npz"), str(tmp_path / "out"))
    np.savez(tmp_path / "partial.npz", train_jpeg=np.zeros(3, dtype=np.uint8))
    with pytest.raises(UserError, match="lacks 'train_offsets'"):
        unpack_jpeg_npz(str(tmp_path / "partial.npz"), str(tmp_path / "out"))
    write_jpeg_npz(tmp_path / "export.npz")
    with np.load(tmp_path / "export.npz") as store:
        arrays = {k: store[k] for k in store.files}
    arrays["test_offsets"] = arrays["test_offsets"][::-1].copy()
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match="test_offsets are not increasing"):
        unpack_jpeg_npz(str(tmp_path / "bad.npz"), str(tmp_path / "out"))
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["unpack-cifar10", str(tmp_path / "garbage.npz"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: npz file") and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert main(["unpack-cifar10", str(tmp_path / "export.npz"), str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 9


def test_unpack_script_entry(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "datasets.image_sources", "unpack-cifar10", str(tmp_path / "x.npz"), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not found" in result.stderr


# --- Waterbirds ---------------------------------------------------------------------------------------------


WATERBIRDS_ROWS = [  # (img_filename, y, split, place, width, height)
    ("001.Black_footed_Albatross/a.jpg", 1, 0, 1, 40, 30),
    ("001.Black_footed_Albatross/b.jpg", 1, 0, 0, 30, 50),
    ("002.Laysan_Albatross/c.jpg", 0, 0, 0, 37, 37),
    ("002.Laysan_Albatross/d.png", 0, 1, 1, 20, 25),
    ("003.Sooty_Albatross/e.jpg", 1, 2, 1, 64, 48),
    ("003.Sooty_Albatross/f.jpg", 0, 2, 0, 48, 64),
    ("003.Sooty_Albatross/g.jpg", 0, 2, 1, 50, 51),
]


def write_waterbirds(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        for i, (name, y, split, place, width, height) in enumerate(WATERBIRDS_ROWS, start=1):
            writer.writerow([i, name, y, split, place, f"/x/place_{i}.jpg"])
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)


def test_waterbirds_metadata_splits_and_groups(tmp_path: Path) -> None:
    from torchvision import transforms

    write_waterbirds(tmp_path)
    data = load_waterbirds(str(tmp_path), size=16)
    assert list(data) == ["train", "val", "test"]
    assert [len(data[s]["y"]) for s in data] == [3, 1, 3]
    assert data["train"]["y"].tolist() == [1, 1, 0] and data["train"]["place"].tolist() == [1, 0, 0]
    groups = torch.cat([2 * data[s]["y"] + data[s]["place"] for s in data])
    assert torch.bincount(groups, minlength=4).tolist() == [2, 2, 1, 2]
    reference = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16), transforms.PILToTensor()])
    rows = [r for r in WATERBIRDS_ROWS if r[2] == 2]
    for image, row in zip(data["test"]["images"], rows, strict=True):
        with Image.open(tmp_path / row[0]) as source:
            expected = reference(source.convert("RGB"))
        assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
        assert torch.equal(image, expected), row[0]
    assert data["val"]["y"].dtype == torch.int64 and data["val"]["place"].dtype == torch.int64


def test_waterbirds_errors_and_fingerprint(tmp_path: Path) -> None:
    assert waterbirds_fingerprint(str(tmp_path)) == "missing"
    with pytest.raises(UserError, match="metadata.csv not found; root must be the folder holding metadata.csv"):
        load_waterbirds(str(tmp_path), size=8)
    write_waterbirds(tmp_path)
    first = waterbirds_fingerprint(str(tmp_path))
    (tmp_path / "003.Sooty_Albatross" / "f.jpg").unlink()
    (tmp_path / "003.Sooty_Albatross" / "e.jpg").unlink()
    assert waterbirds_fingerprint(str(tmp_path)) != first
    with pytest.raises(UserError, match=r"Waterbirds image .*003\.Sooty_Albatross/e\.jpg \(listed in metadata"):
        load_waterbirds(str(tmp_path), size=8)
    meta = tmp_path / "metadata.csv"
    text = meta.read_text()
    meta.write_text(text.replace(",place,", ",location,"))
    with pytest.raises(UserError, match="lacks the column 'place'"):
        load_waterbirds(str(tmp_path), size=8)
    lines = text.splitlines()
    lines[3] = lines[3].replace(",0,0,0,", ",0,3,0,")  # split 3 on line 4
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="line 4: split='3', expected one of 0, 1, 2"):
        load_waterbirds(str(tmp_path), size=8)
    write_waterbirds(tmp_path)
    (tmp_path / "002.Laysan_Albatross" / "c.jpg").write_bytes(b"truncated")
    with pytest.raises(UserError, match=r"cannot decode image .*c\.jpg"):
        load_waterbirds(str(tmp_path), size=8)
