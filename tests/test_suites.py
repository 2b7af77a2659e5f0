"""Suites: every registered suite expands into valid runs; the paper-tea-cmnist suite runs end to end at a
tiny size and its report puts our numbers next to the paper's (N/A cells keep the paper's reason)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.errors import UserError
from bench.suites import DatasetEntry, get_suite, list_suites, suite_from_yaml
from bench.sweep import run_sweep
from reports.report import write_report
from tests.conftest import TINY_DATA


@pytest.mark.parametrize("name", list_suites())
@pytest.mark.parametrize("protocol", [None, "fast"])
def test_suite_expands(name: str, protocol: str | None) -> None:
    configs = get_suite(name).expand(protocol=protocol)
    assert configs and len({c.run_id for c in configs}) == len(configs)
    if any(c.teacher for c in configs):
        assert configs[0].method == "teacher", "teachers run first"
    for dataset in {c.dataset for c in configs}:
        teachers = {str(c.teacher) for c in configs if c.teacher and c.dataset == dataset}
        assert len(teachers) <= 1, "every distillation run on a dataset shares one teacher"


def test_paper_tea_cmnist_runs_and_reports_against_the_paper(tmp_path: Path) -> None:
    suite = get_suite("paper-tea-cmnist")
    tiny = dataclasses.replace(
        suite,
        datasets=(DatasetEntry("coloured_mnist", {**TINY_DATA, "strength": 1.0}),),
        hparams={method: {"epochs": 1, "batch_size": 64} for method in suite.methods},
    )
    configs = tiny.expand(protocol="fast")
    counts = run_sweep(configs, tmp_path, device="cpu", progress=False)
    assert counts["finished"] == len(configs) == len(suite.methods)
    report = (write_report(tmp_path) / "report.md").read_text()
    comparison = report.split("### Paper vs ours")[1].split("###")[0]
    for method in ("erm", "teacher", "output_distill", "lrp_distill", "gradinput_distill", "inputgrad_distill",
                   "feature_distill"):
        assert f"| {method} |" in comparison
    lrp_row = next(line for line in comparison.splitlines() if line.startswith("| lrp_distill |"))
    assert "| 98.2 |" in lrp_row and "| 98.3 |" in lrp_row
    gradcam_row = next(line for line in comparison.splitlines() if line.startswith("| gradcam_distill |"))
    assert "N/A (N/A in the paper: the un-adapted ResNet18 has a 1x1 last feature map at 28x28)" in gradcam_row


def test_per_dataset_hparams_override_the_suite_level(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nprotocol: fast\nmethods: [erm, kd]\nhparams: {erm: {lr: 0.05, epochs: 3}, teacher: {epochs: 2}}\n"
        "datasets:\n  - coloured_mnist\n  - name: mnist_sc\n    params: {strength: 0.9}\n"
        "    hparams: {erm: {epochs: 7}, teacher: {epochs: 5}}\n"
        "  - name: cmnist_lff\n    methods: [erm]\n")
    configs = {(c.method, c.dataset): c for c in suite_from_yaml(path).expand()}
    assert configs["erm", "coloured_mnist"].hparams["epochs"] == 3
    sc = configs["erm", "mnist_sc"]
    assert (sc.hparams["epochs"], sc.hparams["lr"]) == (7, 0.05)  # dataset value wins, the rest is kept
    assert configs["kd", "mnist_sc"].teacher["hparams"]["epochs"] == 5
    assert configs["kd", "coloured_mnist"].teacher["hparams"]["epochs"] == 2
    assert ("erm", "cmnist_lff") in configs and ("kd", "cmnist_lff") not in configs  # per-dataset method list


def test_paper_e2kd_waterbirds_reports_agreement_on_the_swapped_groups(tmp_path: Path) -> None:
    suite = get_suite("paper-e2kd-waterbirds")
    tiny = dataclasses.replace(
        suite,
        datasets=(DatasetEntry("waterbirds_like", {"strength": 1.0, "train_size": 128, "val_size": 64,
                                                   "test_size": 64, "size": 32}),),
        hparams={method: {"epochs": 1, "batch_size": 32} for method in suite.methods},
    )
    configs = tiny.expand(protocol="fast", seeds=1)
    counts = run_sweep(configs, tmp_path, device="cpu", progress=False)
    assert counts["finished"] == len(configs) == 3
    report = (write_report(tmp_path) / "report.md").read_text()
    comparison = report.split("### Paper vs ours")[1].split("###")[0]
    assert "test_ood agreement ours" in comparison
    e2kd_row = next(line for line in comparison.splitlines() if line.startswith("| e2kd |"))
    assert "| 36.8 |" in e2kd_row and "| 69.1 |" in e2kd_row


def test_a_dataset_entry_may_set_its_own_seed_count(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nprotocol: fast\nmethods: [erm]\nseeds: 1\ndatasets:\n"
                    "  - name: coloured_mnist\n    seeds: 3\n  - mnist_sc\n")
    suite = suite_from_yaml(path)
    seeds = sorted((c.dataset, c.seed) for c in suite.expand())
    assert seeds == [("coloured_mnist", 0), ("coloured_mnist", 1), ("coloured_mnist", 2), ("mnist_sc", 0)]
    assert len(suite.expand(seeds=2)) == 4  # --seeds overrides every entry
    path.write_text("name: s\nprotocol: fast\nmethods: [erm]\ndatasets:\n  - name: coloured_mnist\n    seeds: 0\n")
    with pytest.raises(UserError, match="seeds must be >= 1"):
        suite_from_yaml(path)


def test_a_grid_runs_every_point_of_its_product(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nprotocol: fast\nmethods: [erm, rrr]\nseeds: 2\nhparams: {rrr: {epochs: 1}}\n"
                    "datasets:\n  - name: mnist_background\n    hparams: {rrr: {lr: 0.1}}\n"
                    "    grid: {rrr: {penalty_weight: [1.0, 10.0], mask_control: [none, random]}}\n")
    configs = suite_from_yaml(path).expand()
    rrr = sorted((c.hparams["penalty_weight"], c.hparams["mask_control"], c.seed) for c in configs
                 if c.method == "rrr")
    assert rrr == [(w, m, s) for w in (1.0, 10.0) for m in ("none", "random") for s in (0, 1)]
    assert all(c.hparams["epochs"] == 1 and c.hparams["lr"] == 0.1 for c in configs if c.method == "rrr")
    assert len({c.run_id for c in configs}) == len(configs) == 8 + 2
    path.write_text("name: s\nprotocol: fast\nmethods: [rrr]\ndatasets:\n  - name: mnist_background\n"
                    "    grid: {rrr: {penalty_weight: []}}\n")
    with pytest.raises(UserError, match="needs at least one value per key"):
        suite_from_yaml(path)


def test_the_suite_teacher_model_is_the_teacher_run_and_every_students_teacher(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nprotocol: fast\nmodel: resnet18_small\nteacher_model: cnn3\n"
                    "methods: [teacher, output_distill, erm]\ndatasets: [coloured_mnist]\n")
    configs = {c.method: c for c in suite_from_yaml(path).expand()}
    assert configs["teacher"].model == "cnn3" and configs["erm"].model == "resnet18_small"
    assert configs["output_distill"].teacher == configs["teacher"].to_dict()  # the run the sweep trains first
    assert configs["output_distill"].model == "resnet18_small"


def test_paper_nd_cmnist_compares_per_ratio(tmp_path: Path) -> None:
    suite = get_suite("paper-nd-cmnist")
    small = {**TINY_DATA, "train_size": 256}
    tiny = dataclasses.replace(
        suite,
        datasets=tuple(DatasetEntry("cmnist_lff", {**small, "conflict_ratio": r}) for r in (0.005, 0.05)),
        hparams={"erm": {"epochs": 1, "batch_size": 64}, "neuron_diff": {"batch_size": 64}},
        methods=("neuron_diff", "erm"),  # the rerun baselines (lff, dfa, dcwp) train in the contract tests
    )
    configs = tiny.expand(protocol="fast", seeds=1)
    assert {c.model for c in configs} == {"cnn3"}
    counts = run_sweep(configs, tmp_path, device="cpu", progress=False)
    assert counts["finished"] == len(configs) == 4
    report = (write_report(tmp_path) / "report.md").read_text()
    section = report.split("\n## cmnist_lff [conflict_ratio=0.005] / fast")[1]
    comparison = section.split("### Paper vs ours")[1].split("###")[0]
    nd_row = next(line for line in comparison.splitlines() if line.startswith("| neuron_diff |"))
    assert "| 93.68 |" in nd_row
