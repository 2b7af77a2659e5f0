"""The contract every registered method keeps, checked over the whole registry.

- Resume equivalence: a run interrupted after every epoch and resumed each time (so a staged method such as
  neuron_diff also resumes right before and right after each stage change) ends with exactly the epoch rows
  and final metrics of the same run trained in one go: training is deterministic on the CPU.
- Full state round trip: ``state_dict()``, saved and loaded as the runner does (``weights_only``), into a
  freshly built instance reproduces every tensor and plain value reachable from the method (all networks,
  optimisers with their scheduled learning rates, stages, subset assignments, frozen teacher outputs), and
  one more step on the same batch from the same RNG state gives the same losses and state on both.
"""
from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import bench.runner as runner
from bench.data import Batch, BiasedDataset, load_dataset
from bench.method import Method, build_method, get_method, list_methods, resolve_hparams
from bench.models import create_model
from bench.runs import RunConfig, make_run_config
from bench.store import Store

CPU = torch.device("cpu")
BATCH = 64
CONTRACT_DATA = {"train_size": 2 * BATCH, "val_size": 32, "test_size": 32}  # two steps an epoch
TEACHER_HP = {"epochs": 1, "batch_size": BATCH}
STEP_BATCH = 16  # the round trip's own steps
STAGED = {"neuron_diff", "dcwp"}  # their fast protocol's stage lengths stay (neuron_diff: 1 + 2 + 2 + 1 epochs)
VARIANTS = [("e2kd", {"frozen_explanations": True, "augment": "none"}), ("lrp_distill", {"teacher_batch_stats": False})]


def family_for(name: str) -> str:
    """COLOURED MNIST, or MNIST with background bias for the methods that need masks."""
    return "mnist_background" if "masks" in get_method(name).requires else "coloured_mnist"


def cases() -> list[Any]:
    """Every registered method with its defaults, plus the options that add state of their own."""
    return ([pytest.param(name, {}, id=name) for name in list_methods()]
            + [pytest.param(name, hp, id=f"{name}-{'-'.join(hp)}") for name, hp in VARIANTS])


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared CPU, OpenMP threads waiting for a busy core make each step many times
    slower. (Determinism needs only the same thread count for the runs compared.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overrides(name: str, hp: dict[str, Any]) -> dict[str, Any]:
    """The contract's hyper-parameters: batch 64, two epochs (a staged method keeps its stage lengths)."""
    return {"batch_size": BATCH, **({} if name in STAGED else {"epochs": 2}), **hp}


# --- resume equivalence -------------------------------------------------------------------------------
class Interrupt(KeyboardInterrupt):
    """A Ctrl-C right after a checkpoint."""


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(uninterrupted, resumed) store folders shared by the module, so that each trains the teacher once."""
    root = tmp_path_factory.mktemp("contract")
    return root / "uninterrupted", root / "resumed"


def run(cfg: RunConfig, store: Path) -> dict[str, Any]:
    return runner.execute(cfg, Store(store), CPU, progress=False)  # a new Store: as a new process would open it


def interrupt_after(run_id: str, stop: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupt run ``run_id`` (not its teacher) right after the checkpoint of epoch ``stop``."""
    original = runner._Training._checkpoint

    def checkpoint(self: runner._Training, epoch: int, history: list) -> None:
        original(self, epoch, history)
        if self.cfg.run_id == run_id and epoch == stop:
            raise Interrupt

    monkeypatch.setattr(runner._Training, "_checkpoint", checkpoint)


@pytest.mark.parametrize(("name", "hp"), cases())
def test_resumed_run_equals_the_uninterrupted_run(name: str, hp: dict[str, Any], stores: tuple[Path, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    uninterrupted, resumed = stores
    cfg = make_run_config(name, family_for(name), "fast", seed=0, hparams=overrides(name, hp),
                          dataset_params=CONTRACT_DATA, teacher_hparams=TEACHER_HP)
    reference = run(cfg, uninterrupted)
    assert reference["status"] == "finished", reference["error"]
    epochs = cfg.hparams["epochs"]
    for stop in range(1, epochs):  # staged: resumes at each stage's first epoch and inside stages
        with monkeypatch.context() as patch:
            interrupt_after(cfg.run_id, stop, patch)
            with pytest.raises(Interrupt):
                run(cfg, resumed)
    record = run(cfg, resumed)
    assert record["status"] == "finished", record["error"]
    assert record["cost"]["attempts"] == epochs  # one attempt per epoch: every resume happened
    assert Store(resumed).epochs(cfg.run_id) == Store(uninterrupted).epochs(cfg.run_id)
    assert record["final"] == reference["final"]


# --- full state round trip ------------------------------------------------------------------------------
NOT_STATE = {"ctx", "hp", "device"}  # what a method is built from, not what it learns


def leaves(method: Method, skip: set[int] | None = None) -> Iterator[tuple[str, Any]]:
    """(path, value) of every live tensor and plain value reachable from the method's attributes: modules
    through their state dicts (and their parameters' ``requires_grad``), optimisers through theirs (their
    hyper-parameters, such as a scheduled lr, included), containers and plain objects walked. Objects whose
    id is in ``skip`` are not entered."""
    seen = set(skip or ())
    for name, value in vars(method).items():
        if name not in NOT_STATE:
            yield from walk(value, name, seen)


def walk(value: Any, path: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
    if isinstance(value, (Tensor, str, int, float, bool, type(None))):
        yield path, value
        return
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, nn.Module):
        yield from ((f"{path}.{name}:requires_grad", p.requires_grad) for name, p in value.named_parameters())
        value = value.state_dict(keep_vars=True)
    elif isinstance(value, torch.optim.Optimizer):
        value = value.state_dict()
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif hasattr(value, "__dict__") and not type(value).__module__.startswith("torch"):
        items = vars(value).items()
    else:
        items = ()
    for key, item in items:
        yield from walk(item, f"{path}.{key}", seen)


def state_of(method: Method) -> dict[str, Any]:
    return {path: value.detach().clone() if isinstance(value, Tensor) else value for path, value in leaves(method)}


@torch.no_grad()
def poison(method: Method) -> None:
    """Change every tensor of the method in place (bool ones negated, others + 1), but not its context's
    teacher, an input: whatever ``load_state_dict`` then fails to restore shows."""
    for _, value in leaves(method, skip={id(method.ctx.teacher)}):
        if isinstance(value, Tensor) and value.dtype == torch.bool:
            value.logical_not_()
        elif isinstance(value, Tensor):
            value.add_(1)


def assert_same_state(method: Method, twin: Method) -> None:
    ours, theirs = state_of(method), state_of(twin)
    assert ours.keys() == theirs.keys()
    differ = [path for path, value in ours.items() if not same(value, theirs[path])]
    assert not differ, f"not restored by load_state_dict: {differ}"


def same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return type(a) is type(b) and a == b


def assert_same_step(method: Method, twin: Method, batch: Batch) -> None:
    logs = []
    for instance in (method, twin):
        torch.manual_seed(1234)
        instance.train()
        logs.append({k: v.detach().clone() for k, v in instance.step(batch).items()})
    assert logs[0].keys() == logs[1].keys()
    assert all(torch.equal(logs[0][k], logs[1][k]) for k in logs[0]), (logs[0], logs[1])
    assert_same_state(method, twin)


def checkpointed(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` saved and read back as the runner's checkpoints are (nothing shared with the original)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location=CPU, weights_only=True)


@pytest.fixture(scope="module")
def contract_datasets(dataset_cache: Path) -> dict[str, BiasedDataset]:
    return {family: load_dataset(family, CONTRACT_DATA, seed=0) for family in ("coloured_mnist", "mnist_background")}


def build(name: str, dataset: BiasedDataset, hp: dict[str, Any], seed: int) -> Method:
    """A freshly built method; each instance gets its own copy of the same teacher (a teacher the method
    changes while it trains is then part of its state)."""
    torch.manual_seed(0)
    teacher = create_model("small_cnn", dataset.num_classes).eval().requires_grad_(False)
    torch.manual_seed(seed)
    cls = get_method(name)
    hparams = resolve_hparams(cls, "fast", overrides(name, hp))
    return build_method(cls, hparams, dataset, "small_cnn", CPU,
                        teacher if "teacher" in cls.requires else None)


@pytest.mark.parametrize(("name", "hp"), cases())
def test_state_dict_round_trip_restores_everything(name: str, hp: dict[str, Any],
                                                   contract_datasets: dict[str, BiasedDataset]) -> None:
    contract_dataset = contract_datasets[family_for(name)]
    method = build(name, contract_dataset, hp, seed=0)
    split = contract_dataset.splits["train"]

    def batch(i: int) -> Batch:
        index = torch.arange(STEP_BATCH * i, STEP_BATCH * (i + 1))
        return split.batch(index, method.train_views, method.ctx.budget)

    for epoch in range(method.hp.epochs):  # every stage of a staged method, every schedule step
        method.on_epoch_start(epoch)
        method.train()
        method.step(batch(0))
        method.step(batch(1))
        twin = build(name, contract_dataset, hp, seed=1)
        poison(twin)
        twin.load_state_dict(checkpointed(method.state_dict()))
        assert_same_state(method, twin)
        assert_same_step(method, twin, batch(2))
