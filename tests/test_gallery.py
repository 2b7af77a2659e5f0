"""The explanation gallery: a deterministic PNG grid of heatmaps for a finished run, and its CLI command."""
from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.errors import UserError
from bench.runner import execute
from bench.runs import make_run_config
from bench.store import Store
from reports.gallery import DEFAULT_METHODS, grid_pixels, write_gallery
from run_bench import main
from tests.conftest import TINY_DATA

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A finished one-epoch KD run (and its one-epoch teacher) in a fresh results folder."""
    folder = tmp_path_factory.mktemp("gallery-results")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "dataset-cache"))
        cfg = make_run_config("kd", "coloured_mnist", "fast", 0, hparams={"epochs": 1, "batch_size": 64},
                              dataset_params=TINY_DATA, teacher_hparams={"epochs": 1, "batch_size": 64})
        store = Store(folder)
        record = execute(cfg, store, torch.device("cpu"), progress=False)
        store.close()
        assert record["status"] == "finished"
        yield folder, cfg.run_id


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_default_gallery_is_a_deterministic_png_of_the_expected_grid(trained: tuple[Path, str]) -> None:
    folder, run_id = trained
    path = write_gallery(folder, run_id)
    assert path == folder / "report" / "gallery" / f"{run_id}.png"
    first = path.read_bytes()
    # 4 bias-aligned + 4 bias-conflicting rows; the KD student's 4 maps plus the teacher's LRP map
    assert png_size(first) == grid_pixels(8, len(DEFAULT_METHODS) + 1)
    assert write_gallery(folder, run_id).read_bytes() == first
    assert not list(path.parent.glob("*.tmp"))


def test_chosen_methods_size_and_output_path(trained: tuple[Path, str], tmp_path: Path) -> None:
    folder, run_id = trained
    out = tmp_path / "sub" / "g.png"
    path = write_gallery(folder, run_id, methods=["gradcam", "attention", "lrp_flex"], n_per_group=1, out=out)
    assert path == out
    assert png_size(out.read_bytes()) == grid_pixels(2, 3 + 1)


def test_cli_explain_prints_the_png_path(trained: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    folder, run_id = trained
    code = main(["explain", "--run", run_id, "--out", str(folder), "--methods", "inputgrad", "--n", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    path = Path(out.strip())
    assert path == folder / "report" / "gallery" / f"{run_id}.png"
    assert png_size(path.read_bytes()) == grid_pixels(4, 2)


@pytest.mark.parametrize("extra,needle", [
    (["--methods", "lrp", "saliency"], "unknown explanation method 'saliency'"),
    (["--n", "0"], "--n must be >= 1"),
    (["--n", "two"], "invalid int value"),
    (["--run", "kd-nope"], "unknown run id 'kd-nope'"),
])
def test_cli_bad_input_is_one_line_exit_2(trained: tuple[Path, str], capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path, extra: list[str], needle: str) -> None:
    folder, run_id = trained
    out = tmp_path / "other-results"
    Store(out).close()
    code = main(["explain", "--run", run_id, "--out", str(out), *extra])
    _, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert not (out / "report").exists()


def test_unknown_run_is_a_user_error(trained: tuple[Path, str]) -> None:
    folder, run_id = trained
    with pytest.raises(UserError, match="unknown run id .*did you mean"):
        write_gallery(folder, run_id[:-1])
    assert not (folder / "report" / "gallery" / f"{run_id[:-1]}.png").exists()


def test_missing_store_and_unfinished_run_are_user_errors(trained: tuple[Path, str], tmp_path: Path) -> None:
    folder, run_id = trained
    with pytest.raises(UserError, match="no results store"):
        write_gallery(tmp_path / "empty", run_id)
    store = Store(tmp_path / "pending")
    config = Store(folder).get(run_id)["config"]  # type: ignore[index]
    store.ensure_run(run_id, config)
    store.close()
    with pytest.raises(UserError, match="not finished"):
        write_gallery(tmp_path / "pending", run_id)
