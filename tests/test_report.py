"""Tests of the report built from a small synthetic results store (CPU, a few seconds, no training): values
computed by hand, and golden files (``tests/golden/report``) of every text output. After an intended change of
the report, regenerate the golden files with ``UPDATE_GOLDEN=1 python -m pytest tests/test_report.py`` and
review the diff."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.artifacts import GALLERY_FILE, save_gallery
from bench.errors import UserError
from bench.store import Store
from reports.report import write_report

GOLDEN = Path(__file__).parent / "golden" / "report"
STRENGTHS = {"erm": (0.3, 0.6), "nd": (0.5, 0.7)}  # cmnist_lff unbiased accuracy at ratio 0.01, 0.05

DATASET = "coloured_mnist"
# (method, protocol, seed) -> (iid, ood, shift) accuracy at the iid_val and last selections.
ACCURACIES: dict[tuple[str, str, int], tuple[float, float, float]] = {
    ("distill", "standard", 0): (0.90, 0.50, 0.70),
    ("distill", "standard", 1): (0.80, 0.60, 0.70),
    ("erm", "standard", 0): (0.99, 0.10, 0.40),
    ("erm", "standard", 1): (0.97, 0.30, 0.50),
    ("teacher", "standard", 0): (0.95, 0.05, 0.30),
    ("teacher", "standard", 1): (0.93, 0.15, 0.30),
    ("erm", "shifted", 0): (0.96, 0.20, 0.35),
}
ORACLE_OOD_BONUS = 0.10
HEADER = "method,dataset,protocol,selection,n_seeds,iid_split,iid_acc,iid_acc_std,headline,headline_value,headline_std"
# By hand: mean and sample std (ddof=1) in percent; e.g. erm ood (10, 30) -> 20 ± sqrt(2 * 10²) = 14.14.
EXPECTED_ROWS = [
    "erm,cmnist_lff [conflict_ratio=0.01],standard,iid_val,2,iid,99.0,0.0,unbiased_acc,31.0,1.41",
    "nd,cmnist_lff [conflict_ratio=0.01],standard,iid_val,2,iid,99.0,0.0,unbiased_acc,51.0,1.41",
    "erm,cmnist_lff [conflict_ratio=0.05],standard,iid_val,2,iid,99.0,0.0,unbiased_acc,61.0,1.41",
    "nd,cmnist_lff [conflict_ratio=0.05],standard,iid_val,2,iid,99.0,0.0,unbiased_acc,71.0,1.41",
    "erm,coloured_mnist,shifted,iid_val,1,iid,96.0,,ood_acc,20.0,",
    "erm,coloured_mnist,shifted,last,1,iid,96.0,,ood_acc,20.0,",
    "erm,coloured_mnist,shifted,oracle,1,iid,96.0,,ood_acc,30.0,",
    "distill,coloured_mnist,standard,iid_val,2,iid,85.0,7.07,ood_acc,55.0,7.07",
    "erm,coloured_mnist,standard,iid_val,2,iid,98.0,1.41,ood_acc,20.0,14.14",
    "teacher,coloured_mnist,standard,iid_val,2,iid,94.0,1.41,ood_acc,10.0,7.07",
    "distill,coloured_mnist,standard,last,2,iid,85.0,7.07,ood_acc,55.0,7.07",
    "erm,coloured_mnist,standard,last,2,iid,98.0,1.41,ood_acc,20.0,14.14",
    "teacher,coloured_mnist,standard,last,2,iid,94.0,1.41,ood_acc,10.0,7.07",
    "distill,coloured_mnist,standard,oracle,2,iid,85.0,7.07,ood_acc,65.0,7.07",
    "erm,coloured_mnist,standard,oracle,2,iid,98.0,1.41,ood_acc,30.0,14.14",
    "teacher,coloured_mnist,standard,oracle,2,iid,94.0,1.41,ood_acc,20.0,7.07",
]
ROLES = {"selection": "val", "validation": ["val"], "iid": "iid", "shifted": ["ood", "shift"], "oracle": "ood_acc",
         "headline": "ood_acc", "unbiased_val": None, "group_kinds": {"0": "aligned", "1": "conflicting"}}
LFF_ROLES = {**ROLES, "shifted": ["unbiased", "conflicting"], "oracle": "unbiased_acc", "headline": "unbiased_acc"}
RULES = {"iid_val": {"metric": "val_loss", "goal": "min", "on_test_split": False},
         "last": {"metric": None, "goal": "last", "on_test_split": False},
         "oracle": {"metric": "ood_acc", "goal": "max", "on_test_split": True}}


def meta(method: str, roles: dict[str, Any] = ROLES) -> dict[str, Any]:
    """What the runner records with a run: roles, the rules' targets, the budget it was granted."""
    budget = {"distill": ([], ["teacher", "teacher:labels", "teacher:debiased_view"]),
              "teacher": (["x_debiased", "y"], ["labels", "debiased_view"])}.get(method, (["y"], ["labels"]))
    return {"roles": roles, "selection": RULES, "granted_fields": budget[0], "supervision": budget[1],
            "is_teacher": method == "teacher"}


def config(method: str, protocol: str, seed: int) -> dict[str, Any]:
    return {"method": method, "dataset": DATASET, "protocol": protocol, "seed": seed, "model": "mlp",
            "hparams": {"lr": 0.001}, "dataset_params": {"strength": 1.0}, "teacher": None}


def metrics(method: str, iid: float, ood: float, shift: float, epoch: int) -> dict[str, Any]:
    """Flat metrics as the engine records them (fractions)."""
    flat: dict[str, Any] = {
        "epoch": epoch, "val_loss": 0.5, "val_acc": iid, "iid_acc": iid, "ood_acc": ood, "shift_acc": shift,
        "iid_ood_gap": iid - ood, "iid_shift_gap": iid - shift,
        "ood_worst_group_acc": ood / 2, "ood_group_acc/aligned": ood, "ood_group_acc/conflicting": ood / 2,
    }
    if method == "distill":
        flat.update(ood_agreement=0.4, shift_agreement=0.6, **{"ood_group_agreement/conflicting": 0.3},
                    ood_expl_cosine=0.5, ood_expl_l1=0.25, ood_shortcut_relevance=0.2)
    return flat


def gallery_record(scale: float) -> dict[str, Any]:
    """A tiny saved gallery: two 1×4×4 test images (one aligned, one conflicting), the run's and its teacher's
    heatmaps."""
    maps = np.arange(32, dtype=np.float32).reshape(2, 4, 4) - 16
    return {"images": (np.arange(32).reshape(2, 1, 4, 4) * 8).astype(np.uint8), "labels": np.array([1, 2]),
            "groups": np.array([0, 1]), "kinds": np.array(["aligned", "conflicting"]),
            "splits": np.array(["iid", "shift"]), "indices": np.array([0, 5]),
            "columns": np.array(["student", "teacher"]), "explainers": np.array(["lrp", "lrp"]),
            "preds": np.array([[1, 0], [1, 2]]), "maps": np.stack([maps * scale, maps]).astype(np.float16)}


def build_store(folder: Path) -> None:
    """Three methods (one a teacher) × two seeds, a single-seed protocol, one failed and one pending run."""
    store = Store(folder)
    for (method, protocol, seed), (iid, ood, shift) in ACCURACIES.items():
        run_id = f"{method}-{protocol}-{seed}"
        store.ensure_run(run_id, config(method, protocol, seed))
        for epoch in range(3):
            store.add_epoch(run_id, epoch, {"train_loss": 1.0 / (epoch + 1),
                                            **metrics(method, iid - 0.1 * (2 - epoch), ood, shift, epoch)})
        final = {"iid_val": metrics(method, iid, ood, shift, 2), "last": metrics(method, iid, ood, shift, 2),
                 "oracle": metrics(method, iid, ood + ORACLE_OOD_BONUS, shift, 1)}
        cost = {"train_seconds": 120.0, "eval_seconds": 5.0, "wall_seconds": 130.0, "images_per_second": 5000.0,
                "peak_memory_mb": 512.0, "device": "cpu", "train_images": 600000}
        store.finish(run_id, final, cost, {"git": "abc", "device": "cpu (test)"}, meta(method))
        if protocol == "standard" and method in ("distill", "teacher"):
            save_gallery(store.run_dir(run_id) / GALLERY_FILE, gallery_record(-1.0 if method == "distill" else 1.0))
    for method, accuracies in STRENGTHS.items():
        for ratio, unbiased in zip((0.01, 0.05), accuracies, strict=True):
            for seed in (0, 1):
                run_id = f"{method}-lff-{ratio}-{seed}"
                cfg = {**config(method, "standard", seed), "dataset": "cmnist_lff",
                       "dataset_params": {"conflict_ratio": ratio}}
                store.ensure_run(run_id, cfg)
                m = {"val_loss": 0.1, "iid_acc": 0.99, "unbiased_acc": unbiased + 0.02 * seed}
                store.finish(run_id, {"iid_val": m}, {"train_seconds": 60.0, "device": "cpu"}, {"git": "abc"},
                             meta(method, LFF_ROLES))
    store.ensure_run("erm-standard-2", config("erm", "standard", 2))
    store.fail("erm-standard-2", "CUDA out of memory\nwhile allocating | 2 GiB")
    store.ensure_run("erm-standard-3", config("erm", "standard", 3))
    store.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    build_store(folder)
    return write_report(folder)


def test_summary_csv_exact(report: Path) -> None:
    assert (report / "summary.csv").read_text().splitlines() == [HEADER, *EXPECTED_ROWS]


def test_markdown_tables(report: Path) -> None:
    text = (report / "report.md").read_text()
    headings = [text.index(f"#### Selection: {s}") for s in ("iid_val", "last", "oracle")]
    assert headings == sorted(headings)
    assert "± = standard deviation over seeds" in text
    assert "Seeds: 2 per method" in text and "Seeds: 1 per method" in text and "upper bound" in text
    assert "| teacher | labels, debiased view | 2 | 94.00 ± 1.41 | 10.00 ± 7.07 | 30.00 ± 0.00 |" in text
    assert "| erm | labels | 1 | 96.00 ± n/a | 20.00 ± n/a | 35.00 ± n/a |" in text
    assert "IID−OOD gap" in text and "teacher agreement OOD" in text and "worst-group OOD" in text
    budget = "teacher(labels, debiased view)"  # recorded with the run
    assert f"| distill | {budget} | 2 | 85.00 ± 7.07 | 55.00 ± 7.07 | 70.00 ± 0.00 | 30.00 ± 14.14 |" in text
    assert "| erm | 2.00 | 5000 | 512 | cpu |" in text
    failed_row = ("| erm-standard-2 | erm | coloured_mnist | standard | 2 "
                  "| CUDA out of memory while allocating \\| 2 GiB |")
    assert failed_row in text
    assert "1 run(s) still pending or running" in text
    assert "![" in text and "](plots/accuracy_coloured_mnist_standard.png)" in text


def test_group_and_explanation_tables(report: Path) -> None:
    text = (report / "report.md").read_text()
    assert "| method | seeds | OOD: aligned | OOD: conflicting |" in text
    assert "| distill | 2 | 55.00 ± 7.07 | 27.50 ± 3.54 |" in text  # conflicting = ood / 2
    assert "### Teacher agreement per group" in text and "| distill | 2 | 30.00 ± 0.00 |" in text
    assert ("| method | seeds | OOD cosine to teacher | OOD normalised L1 to teacher | OOD relevance on shortcut (%) |"
            in text)
    assert "| distill | 2 | 0.500 ± 0.000 | 0.250 ± 0.000 | 20.00 ± 0.00 |" in text


def test_leaderboard_intervals_and_paired_test(report: Path) -> None:
    """95 % t-interval: mean ± t(0.975, 1) · s/√2; paired t-test over seeds 0 and 1 against ERM."""
    board = (report / "report.md").read_text().split("## Leaderboard")[1].split("\n## ")[0]
    text = board.split("### coloured_mnist / standard")[1].split("###")[0]
    # distill OOD 50, 60 → mean 55, s = 7.07, half-width 12.706 · 5 = 63.53; vs ERM (10, 30): diffs 40, 30
    assert "| distill | teacher(labels, debiased view) | 2 | 85.00 [21.47, 148.53] | 55.00 [-8.53, 118.53] |" in text
    assert "| +35.00 (p 0.090) |" in text  # t = 35 / (7.07 / √2) = 7, two-sided p with 1 d.o.f. = 0.0903
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[rows.index("| method") + 1:][:3] == ["| distill", "| erm", "| teacher"]  # sorted by OOD accuracy


def test_latex_and_table_csvs(report: Path) -> None:
    tex = (report / "report.tex").read_text()
    assert tex.startswith("\\documentclass{article}") and tex.rstrip().endswith("\\end{document}")
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") > 10
    assert "85.00 $\\pm$ 7.07" in tex and "\\_" in tex
    csvs = sorted(p.name for p in (report / "tables").iterdir())
    assert "accuracy_coloured_mnist_standard_iid_val.csv" in csvs and "leaderboard_coloured_mnist_standard.csv" in csvs
    first = (report / "tables" / "accuracy_coloured_mnist_standard_iid_val.csv").read_text().splitlines()
    assert first[0].startswith("method,supervision,seeds,IID,OOD,shift")


def test_paper_vs_ours(report: Path) -> None:
    """Published numbers (results/paper) beside ours with Δ = ours − paper; methods without one are left out."""
    text = (report / "report.md").read_text()
    assert text.count("### Paper vs ours") == 4  # coloured_mnist (Bassi et al.) twice, cmnist_lff (Niu et al.) twice
    assert ("| erm | 1 | 96.00 ± n/a | 100 | -4.00 | 20.00 ± n/a | 16.93 | +3.07 | 35.00 ± n/a | 0.18 | +34.82 |"
            in text)
    assert "| teacher | 2 | 94.00 ± 1.41 | 98.6 | -4.60 |" in text
    standard = text.split("## coloured_mnist / standard")[1]
    assert "| distill | 2 |" not in standard.split("### Paper vs ours")[1].split("###")[0]


def test_html_self_contained(report: Path) -> None:
    text = (report / "index.html").read_text()
    assert text.count('src="data:image/png;base64,') == len(list((report / "plots").iterdir()))
    assert 'src="http' not in text and "<script" not in text and "<link" not in text
    assert "<td>teacher</td>" in text and "Selection: oracle" in text and "CUDA out of memory" in text


def test_plots_exist(report: Path) -> None:
    names = sorted(path.name for path in (report / "plots").iterdir())
    assert names == ["accuracy_cmnist_lff-conflict_ratio-0.01-_standard.png",
                     "accuracy_cmnist_lff-conflict_ratio-0.05-_standard.png",
                     "accuracy_coloured_mnist_shifted.png", "accuracy_coloured_mnist_standard.png",
                     "cost_cmnist_lff-conflict_ratio-0.01-_standard.png",
                     "cost_cmnist_lff-conflict_ratio-0.05-_standard.png",
                     "cost_coloured_mnist_shifted.png", "cost_coloured_mnist_standard.png",
                     "curves_coloured_mnist_shifted.png", "curves_coloured_mnist_standard.png",
                     "gallery_coloured_mnist_standard.png", "strength_cmnist_lff_standard.png"]
    assert all((report / "plots" / n).read_bytes().startswith(b"\x89PNG") for n in names)


def test_golden_files(report: Path) -> None:
    """Every text output equals its golden file (HTML with its inlined PNGs replaced by their file names)."""
    outputs = {"report.md": (report / "report.md").read_text(), "summary.csv": (report / "summary.csv").read_text(),
               "report.tex": (report / "report.tex").read_text(), "index.html": html_without_images(report)}
    outputs.update({f"tables/{p.name}": p.read_text() for p in sorted((report / "tables").iterdir())})
    if os.environ.get("UPDATE_GOLDEN"):
        for name, text in outputs.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_text(text)
    golden = {str(p.relative_to(GOLDEN)): p.read_text() for p in sorted(GOLDEN.rglob("*")) if p.is_file()}
    assert sorted(golden) == sorted(outputs)
    for name, text in outputs.items():
        assert text == golden[name], f"{name} differs from tests/golden/report/{name} (see the module docstring)"


def html_without_images(report: Path) -> str:
    return re.sub(r'src="data:image/png;base64,[^"]+"', 'src="(png)"', (report / "index.html").read_text())


def test_regeneration_is_byte_identical(report: Path) -> None:
    files = sorted(p for p in report.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    write_report(report.parent)
    assert sorted(p for p in report.rglob("*") if p.is_file()) == files
    assert all(p.read_bytes() == data for p, data in before.items())


def test_empty_store_says_so(tmp_path: Path) -> None:
    Store(tmp_path).close()
    report = write_report(tmp_path)
    assert (report / "summary.csv").read_text() == HEADER + "\n"
    assert "No finished runs" in (report / "report.md").read_text()
    assert "No finished runs" in (report / "index.html").read_text()


def test_missing_store_raises(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no results store"):
        write_report(tmp_path)


def test_variants_are_not_averaged_together(tmp_path: Path) -> None:
    """Runs that differ in more than the seed (a learning rate, a bias strength) get rows of their own."""
    store = Store(tmp_path)
    cases = [("lr", 0.1, 1.0, 0.9), ("lr", 0.01, 1.0, 0.5), ("strength", 0.001, 0.8, 0.7)]
    for _, lr, strength, ood in cases:
        for seed in (0, 1):
            cfg = {**config("erm", "standard", seed), "hparams": {"lr": lr}, "dataset_params": {"strength": strength}}
            run_id = f"erm-{lr}-{strength}-{seed}"
            store.ensure_run(run_id, cfg)
            m = metrics("erm", 1.0, ood, 0.1, 1)
            store.finish(run_id, {"iid_val": m}, {"train_seconds": 1.0, "device": "cpu"}, {"git": "abc"}, meta("erm"))
    store.close()
    rows = (write_report(tmp_path) / "summary.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[0] + "|" + row.split(",")[1] + "|" + row.split(",")[9] for row in rows) == [
        "erm [lr=0.01]|coloured_mnist [strength=1.0]|50.0",
        "erm [lr=0.1]|coloured_mnist [strength=1.0]|90.0",
        "erm|coloured_mnist [strength=0.8]|70.0",  # the only erm variant on that dataset: no qualifier
    ]
