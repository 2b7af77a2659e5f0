"""The evaluation batch: sized to the CPU's cache, the protocol's on an accelerator, and without effect on what
a model predicts."""
import pytest
import torch

from bench.data import Split
from bench.metrics import CPU_EVAL_PIXELS, eval_batch_size, predict_split
from bench.models import create_model

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def test_cpu_batch_holds_the_pixel_budget_at_a_power_of_two() -> None:
    assert eval_batch_size(512, CPU, (10, 3, 64, 64)) == 32
    assert eval_batch_size(512, CPU, (10, 3, 32, 32)) == 128
    assert eval_batch_size(512, CPU, (10, 3, 28, 28)) == 128
    for side in (16, 28, 40, 64, 90):
        size = eval_batch_size(512, CPU, (1, 3, side, side))
        assert size & (size - 1) == 0
        assert size * side * side <= CPU_EVAL_PIXELS and 2 * size * side * side > CPU_EVAL_PIXELS


def test_cpu_batch_is_bounded_by_the_protocol_and_by_sixteen() -> None:
    assert eval_batch_size(512, CPU, (1, 3, 8, 8)) == 512
    assert eval_batch_size(64, CPU, (1, 3, 8, 8)) == 64
    assert eval_batch_size(512, CPU, (1, 3, 512, 512)) == 16


def test_an_accelerator_keeps_the_protocol_batch() -> None:
    assert eval_batch_size(512, GPU, (1, 3, 64, 64)) == 512


def test_predictions_do_not_depend_on_the_evaluation_batch() -> None:
    torch.manual_seed(0)
    n = 70
    x = torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (n,))
    split = Split(x, y, y, y)
    model = create_model("small_cnn", 10, 3).eval()
    with torch.no_grad():  # a few training-mode passes give the batch-norm layers non-trivial running statistics
        model.train()
        model(x.float() / 255)
        model.eval()
    small, large = predict_split(model, split, 16), predict_split(model, split, 512)
    assert torch.equal(small, large)


def test_a_declared_subset_takes_its_rows_of_the_parents_predictions(tmp_path) -> None:
    """Waterbirds' test_id and test_ood are rows of test: evaluation predicts those images once, and the metrics
    equal predicting each split on its own; the declaration survives the dataset cache."""
    from bench.data import load_dataset
    from bench.metrics import evaluate, predict_splits

    dataset = load_dataset("waterbirds_like", {"train_size": 64, "val_size": 32, "test_size": 48, "size": 32}, 0,
                           cache_dir=tmp_path)
    assert set(dataset.subsets) == {"test_id", "test_ood"}
    cached = load_dataset("waterbirds_like", {"train_size": 64, "val_size": 32, "test_size": 48, "size": 32}, 0,
                          cache_dir=tmp_path)
    assert {k: (p, r.tolist()) for k, (p, r) in cached.subsets.items()} == {
        k: (p, r.tolist()) for k, (p, r) in dataset.subsets.items()}
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2)).eval()
    seen: list[int] = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return model(x)

    with torch.no_grad():
        shared = evaluate(predict, dataset, 16, dataset.eval_splits)
        assert sum(seen) == len(dataset.splits["val"]) + len(dataset.splits["test"])  # test_id/test_ood not again
        alone = {name: predict_split(model, dataset.splits[name], 16) for name in dataset.eval_splits}
        assert all(torch.equal(p, alone[n]) for n, p in predict_splits(model, dataset, dataset.eval_splits, 16).items())
    expected = (alone["test_id"] == dataset.splits["test_id"].y).float().mean()
    assert shared["test_id_acc"] == pytest.approx(float(expected))
