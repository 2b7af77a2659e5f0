"""Explanation metrics measured at evaluation: hand-computed values of the shortcut fraction, cosine and
normalised L1; the probe's metrics on real datasets; the gallery record a run writes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.artifacts import GALLERY_FILE, read_gallery
from bench.data import load_dataset
from bench.explain import explain
from bench.heatmaps import (
    ExplanationProbe,
    choose_explainer,
    cosine,
    normalised_l1,
    shortcut_fraction,
    shortcut_region,
)
from bench.runner import execute
from bench.runs import make_run_config
from bench.store import Store
from datasets.dogs_with_ties import DogsWithTies
from datasets.mnist_sc import MNISTSC
from tests.conftest import TINY_DATA, TINY_HP


def test_shortcut_fraction_by_hand() -> None:
    maps = torch.tensor([[[1.0, 3.0], [-5.0, 0.0]], [[0.0, 0.0], [-1.0, 0.0]]])
    region = torch.tensor([[[True, False], [True, False]], [[True, True], [False, False]]])
    fraction, has = shortcut_fraction(maps, region)
    assert fraction[0].item() == pytest.approx(0.25)  # positive relevance 1 + 3, of which 1 on the region
    assert has.tolist() == [True, False]  # no positive relevance: excluded, not counted as 0


def test_similarities_by_hand() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert cosine(a, 3 * a).item() == pytest.approx(1.0)
    assert normalised_l1(a, 3 * a).item() == pytest.approx(0.0)
    assert cosine(a, -a).item() == pytest.approx(-1.0)
    assert normalised_l1(a, -a).item() == pytest.approx(1.0)
    b = torch.tensor([[[0.0, 2.0], [0.0, 0.0]]])
    assert cosine(a, b).item() == pytest.approx(0.0) and normalised_l1(a, b).item() == pytest.approx(1.0)
    half = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert normalised_l1(a, half).item() == pytest.approx(0.5)


def test_shortcut_region_kinds() -> None:
    dataset = load_dataset("mnist_sc", MNISTSC.test_options, 0)
    split = dataset.splits["iid"]
    assert dataset.shortcut_region == "mask"
    assert torch.equal(shortcut_region(split, "mask"), split.mask[:, 0])
    assert torch.equal(shortcut_region(split, "outside_mask"), ~split.mask[:, 0])
    assert shortcut_region(split, "") is None


def test_probe_measures_a_model_that_looks_only_at_the_patch() -> None:
    """A linear model whose weights are the first test image's tie pixels puts all of that image's positive
    relevance on the tie; explained against itself as the teacher, the maps are identical."""
    dataset = load_dataset("dogs_with_ties", DogsWithTies.test_options, 0)
    split = dataset.splits["iid"]
    c, h, w = dataset.image_shape
    weight = split.mask[0].float().expand(c, h, w).reshape(1, -1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.cat([weight, weight]))
    probe = ExplanationProbe(dataset, teacher=model, size=1)
    metrics = probe.metrics(model)
    assert choose_explainer(model, split.x[:1].float()) == "lrp"
    assert split.mask[0].any() and metrics["iid_shortcut_relevance"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["iid_expl_cosine"] == pytest.approx(1.0) and metrics["iid_expl_l1"] == pytest.approx(0.0, abs=1e-6)


def test_fallback_explainer_when_lrp_has_no_rule() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1)) * 2

    x = torch.rand(2, 1, 2, 2)
    name = choose_explainer(Odd(), x)
    assert name in ("lrp", "gradinput")
    explain(Odd(), x, torch.zeros(2, dtype=torch.long), name)


def test_run_records_explanation_metrics_and_gallery(tmp_path: Path) -> None:
    store = Store(tmp_path)
    cfg = make_run_config("lrp_distill", "coloured_mnist", "fast", seed=0, hparams=TINY_HP, dataset_params=TINY_DATA)
    record = execute(cfg, store, torch.device("cpu"), progress=False)
    final = record["final"]["iid_val"]
    for split in ("iid", "ood", "shift"):
        assert -1.0 <= final[f"{split}_expl_cosine"] <= 1.0 and 0.0 <= final[f"{split}_expl_l1"] <= 1.0
    gallery = read_gallery(store.run_dir(record["run_id"]) / GALLERY_FILE)
    assert gallery is not None and list(gallery["columns"]) == ["student", "teacher"]
    assert gallery["maps"].shape == (2, len(gallery["splits"]), 28, 28)
    assert gallery["images"].dtype == np.uint8 and list(gallery["explainers"]) == ["lrp", "lrp"]
    assert set(gallery["kinds"].tolist()) == {"aligned", "conflicting"}
    assert int(gallery["epoch"]) == final["epoch"]  # the kept checkpoint's gallery is the reported epoch's

    mnist_sc = make_run_config("erm", "mnist_sc", "fast", seed=0, hparams=TINY_HP, dataset_params=MNISTSC.test_options)
    final = execute(mnist_sc, store, torch.device("cpu"), progress=False)["final"]["iid_val"]
    assert 0.0 <= final["iid_shortcut_relevance"] <= 1.0 and "iid_expl_cosine" not in final


def test_the_report_and_the_explain_command_show_the_same_teacher_heatmaps(tmp_path: Path) -> None:
    """objects_on_scenes feeds its teacher the debiased view: both pipelines must explain the teacher on it, with
    the same rows and functions, so the maps are the same tensors."""
    from bench.heatmaps import explain_run
    from datasets.objects_on_scenes import ObjectsOnScenes

    store = Store(tmp_path)
    cfg = make_run_config("lrp_distill", "objects_on_scenes", "fast", 0, {"epochs": 1, "batch_size": 32},
                          ObjectsOnScenes.test_options, teacher_hparams={"epochs": 1, "batch_size": 32})
    record = execute(cfg, store, torch.device("cpu"), progress=False)
    saved = read_gallery(store.run_dir(record["run_id"]) / GALLERY_FILE)
    fresh = explain_run(store, record["run_id"], ["lrp"], n_per_group=4)
    assert saved is not None and list(fresh["columns"]) == ["student", "teacher"]
    teacher = list(saved["columns"]).index("teacher")
    assert np.array_equal(saved["maps"][teacher], fresh["maps"][1])
    assert np.array_equal(saved["maps"][0], fresh["maps"][0])  # the kept network, explained alike
    for key in ("images", "labels", "splits", "indices", "kinds"):
        assert np.array_equal(saved[key], fresh[key]), key
