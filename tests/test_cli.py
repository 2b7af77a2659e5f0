"""The CLI contract: listing, bad input (one line, exit code 2, nothing written), report command."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from run_bench import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("what,expected", [("methods", "kd"), ("datasets", "coloured_mnist"),
                                           ("suites", "quick"), ("models", "resnet18"), ("protocols", "paper")])
def test_list(capsys: pytest.CaptureFixture[str], what: str, expected: str) -> None:
    code, out, _ = run_cli(capsys, "list", what)
    assert code == 0 and expected in out


@pytest.mark.parametrize("args,needle", [
    (["run", "--method", "nope", "--dataset", "coloured_mnist"], "unknown method 'nope'"),
    (["run", "--method", "erm", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--protocol", "nope"], "unknown protocol"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--hp", "lr=abc"], "must be a number"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--hp", "lr=-1"], "lr must be > 0"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--hp", "colour=red"], "unknown erm hyper-parameter"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--hp", "lr"], "key=value"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--data", "strength=1.5"], "strength"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--seed", "-1"], "seed"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--model", "vit"], "unknown model 'vit'"),
    (["run", "--method", "erm", "--dataset", "coloured_mnist", "--device", "tpu"], "unknown device"),
    (["sweep", "nope"], "unknown suite 'nope'"),
    (["sweep", "quick", "--seeds", "0"], "--seeds must be >= 1"),
    (["sweep", "quick", "--executor", "magic"], "unknown executor"),
    (["list", "things"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    (["perf", "--steps", "0"], "--steps"),
    (["perf", "--explanations", "shap"], "unknown explanation method 'shap'"),
    (["datasets", "show"], "needs a dataset name"),
    (["datasets", "show", "nope"], "unknown dataset 'nope'"),
    (["datasets", "card", "mnist_sc", "--data", "patch_size=9"], "patch_size"),
    (["datasets", "show", "cmnist_lff", "--data", "conflict_ratio=2"], "conflict_ratio"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      args: list[str], needle: str) -> None:
    out_dir = tmp_path / "out"
    if args[0] in ("run", "sweep", "datasets"):
        args = [*args, "--out", str(out_dir)]
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert not out_dir.exists()


def test_perf_prints_method_and_explanation_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "perf", "--protocol", "fast", "--steps", "1", "--batch-size", "32",
                           "--methods", "erm", "--explanations", "lrp", "gradcam", "--device", "cpu")
    assert code == 0
    assert "erm " in out and "explain:lrp" in out and "explain:gradcam" in out and "relative to a plain ERM step" in out


def test_cuda_request_without_gpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run_cli(capsys, "run", "--method", "erm", "--dataset", "coloured_mnist", "--device", "cuda",
                           "--out", str(tmp_path / "o"))
    assert code == 2 and "no CUDA GPU" in err


def test_corrupt_store_and_missing_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "report", "--out", str(tmp_path / "missing"))
    assert code == 2 and "no results store" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "store.sqlite").write_bytes(b"garbage" * 1000)
    code, _, err = run_cli(capsys, "report", "--out", str(tmp_path / "bad"))
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1


def test_run_then_report_end_to_end(tmp_path: Path) -> None:
    """Through a real subprocess, as a user would call it."""
    out = tmp_path / "results"
    base = [sys.executable, "run_bench.py"]
    run = subprocess.run(base + ["run", "--method", "erm", "--dataset", "coloured_mnist", "--hp", "epochs=1",
                                 "--hp", "batch_size=64", "--data", "train_size=256", "--data", "val_size=128",
                                 "--data", "test_size=128", "--out", str(out), "--quiet", "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "finished" in run.stdout and "ood" in run.stdout
    report = subprocess.run(base + ["report", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr
    summary = (out / "report" / "summary.csv").read_text().splitlines()
    assert summary[0] == ("method,dataset,protocol,selection,n_seeds,iid_split,iid_acc,iid_acc_std,headline,"
                          "headline_value,headline_std")
    assert any(line.startswith("erm,coloured_mnist,fast,iid_val,1,") for line in summary)


def test_cuda_graphs_flag_is_opt_in(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import cudagraph

    monkeypatch.setenv(cudagraph.ENV_FLAG, "0")  # restored (unset) after the test
    assert not cudagraph.enabled()
    code, _, _ = run_cli(capsys, "run", "--method", "erm", "--dataset", "coloured_mnist", "--cuda-graphs",
                         "--hp", "epochs=1", "--hp", "batch_size=64", "--data", "train_size=128", "--data",
                         "val_size=64", "--data", "test_size=64", "--out", str(tmp_path), "--quiet", "--device", "cpu")
    assert code == 0 and cudagraph.enabled()


def test_datasets_list_card_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "datasets", "list")
    assert code == 0 and "cmnist_lff" in out and "mnist_background" in out
    small = ["--data", "train_size=64", "--data", "val_size=32", "--data", "test_size=32"]
    code, out, _ = run_cli(capsys, "datasets", "card", "mnist_sc", *small)
    assert code == 0 and "| shift | 32 | 0 | 32 | 0 |" in out
    code, out, _ = run_cli(capsys, "datasets", "show", "mnist_sc", *small, "--n", "4", "--out", str(tmp_path))
    picture = tmp_path / "mnist_sc-seed0.png"
    assert code == 0 and str(picture) in out
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.with_suffix(".md").exists()
