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


def test_one_pass_gives_the_predictions_and_the_default_validation_objective() -> None:
    """``predict_with_loss`` equals predicting the split and taking ``Method.val_loss``'s cross-entropy on it."""
    import torch.nn.functional as F

    from bench.metrics import predict_with_loss

    torch.manual_seed(1)
    x = torch.randint(0, 256, (70, 3, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (70,))
    split = Split(x, y, y, y)
    model = create_model("small_cnn", 10, 3).eval()
    preds, loss = predict_with_loss(model, split, 16)
    with torch.no_grad():
        expected = F.cross_entropy(model(x.float() / 255), y).item()
    assert torch.equal(preds, predict_split(model, split, 512))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_a_default_objective_forwards_the_selection_split_once_per_validation(monkeypatch, tmp_path) -> None:
    """ERM's validation objective is the cross-entropy of its predictions: the validation loss and accuracy come
    from one pass over the selection split, equal to the method's own ``val_loss`` on it."""
    import bench.runner as runner
    from bench.runs import make_run_config
    from bench.store import Store
    from tests.conftest import TINY_DATA, TINY_HP

    cfg = make_run_config("erm", "coloured_mnist", "fast", 0, TINY_HP, TINY_DATA)
    training = runner._Training(cfg, runner.Prepared(cfg, CPU), Store(tmp_path), CPU, None, False)
    selection = training.dataset.splits[training.roles.selection]
    calls = []
    real = training.method.predict
    monkeypatch.setattr(training.method, "predict", lambda x: (calls.append(len(x)), real(x))[1])
    training.method.eval()
    metrics = training._measure(list(training.roles.validation))
    assert sum(calls) == sum(len(training.dataset.splits[s]) for s in training.roles.validation)
    with torch.no_grad():
        size = len(selection)
        own = training.method.val_loss(selection.batch(torch.arange(size), ("x",), training.budget)).item()
    assert metrics["val_loss"] == pytest.approx(own, rel=1e-5)
