"""The step schedule (lr_milestones, lr_gamma): the rate per epoch, resume, parsing, refusal where a method
schedules itself, and runs made before the option existed keep their ids."""
from __future__ import annotations

import pytest
import torch

from bench.errors import UserError
from bench.method import build_method, get_method, hparams_dict, resolve_hparams
from bench.runs import make_run_config


def built(dataset, name: str = "erm", **hp):  # noqa: ANN001, ANN201
    hparams = resolve_hparams(get_method(name), "fast", {"batch_size": 16, **hp})
    return build_method(get_method(name), hparams, dataset, "small_cnn", torch.device("cpu"), None)


def rates(method) -> list[float]:  # noqa: ANN001
    return [g["lr"] for opt in method.scheduled_optimizers() for g in opt.param_groups]


def test_rate_per_epoch_and_resume(tiny_dataset) -> None:  # noqa: ANN001
    method = built(tiny_dataset, lr=0.1, lr_milestones="2, 4", lr_gamma=0.5, epochs=6)
    seen = []
    for epoch in range(6):
        method.apply_lr_schedule(epoch)
        seen.append(rates(method)[0])
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    resumed = built(tiny_dataset, lr=0.1, lr_milestones=[2, 4], lr_gamma=0.5, epochs=6)
    resumed.load_state_dict(method.state_dict())  # the optimizer's state keeps the initial rate
    resumed.apply_lr_schedule(3)
    assert rates(resumed)[0] == pytest.approx(0.05)
    plain = built(tiny_dataset, lr=0.1)
    plain.apply_lr_schedule(50)
    assert rates(plain) == [0.1]  # no milestones: untouched


def test_ule_schedules_both_of_its_networks(tiny_dataset) -> None:  # noqa: ANN001
    method = built(tiny_dataset, "ule", lr=0.1, lr_milestones=[1])
    method.apply_lr_schedule(1)
    assert rates(method) == pytest.approx([0.01, 0.01])


@pytest.mark.parametrize("value, message", [([3, 2], "increasing"), ([0], "increasing"), ("a,b", "list of epochs"),
                                            ([1.5], "increasing")])
def test_bad_milestones_are_refused(value, message: str) -> None:  # noqa: ANN001
    with pytest.raises(UserError, match=message):
        resolve_hparams(get_method("erm"), "fast", {"lr_milestones": value})
    with pytest.raises(UserError, match="lr_gamma must be in"):
        resolve_hparams(get_method("erm"), "fast", {"lr_gamma": 0})


@pytest.mark.parametrize("name", ["e2kd", "neuron_diff"])
def test_methods_with_their_own_schedule_refuse_milestones(name: str) -> None:
    with pytest.raises(UserError, match="schedules its own learning rates"):
        resolve_hparams(get_method(name), "fast", {"lr_milestones": [2]})


def test_the_option_at_its_default_leaves_configs_and_run_ids_as_before() -> None:
    values = hparams_dict(resolve_hparams(get_method("erm"), "fast"))
    assert "lr_milestones" not in values and "lr_gamma" not in values
    # the ids these configs had before the option existed
    assert make_run_config("erm", "coloured_mnist", "fast").run_id == "erm-coloured_mnist-fast-s0-d75a7f76e9"
    assert make_run_config("ule", "mnist_sc", "cpu").run_id == "ule-mnist_sc-cpu-s0-d1dcd7a60f"
    scheduled = hparams_dict(resolve_hparams(get_method("erm"), "fast", {"lr_milestones": "5"}))
    assert scheduled["lr_milestones"] == [5] and "lr_gamma" not in scheduled  # the default gamma is implied
    again = resolve_hparams(get_method("erm"), "fast", scheduled)  # a stored config resolves to the same
    assert hparams_dict(again) == scheduled


def test_the_runner_applies_the_schedule_each_epoch(tmp_path) -> None:  # noqa: ANN001
    from bench.artifacts import load_checkpoint
    from bench.runner import execute
    from bench.store import Store
    from tests.conftest import TINY_DATA

    cfg = make_run_config("erm", "coloured_mnist", "fast", hparams={"epochs": 2, "lr": 0.1, "lr_milestones": [1]},
                          dataset_params=TINY_DATA)
    store = Store(tmp_path)
    assert execute(cfg, store, torch.device("cpu"), progress=False)["status"] == "finished"
    state = load_checkpoint(store.run_dir(cfg.run_id) / "last.pt", torch.device("cpu"))
    store.close()
    (group,) = state["method"]["optimizer"]["param_groups"]
    assert group["lr"] == pytest.approx(0.01) and group["initial_lr"] == pytest.approx(0.1)
