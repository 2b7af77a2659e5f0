"""Selection rules on synthetic epoch records (DomainBed-style), and the kept checkpoint agreeing with them."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.artifacts import load_checkpoint
from bench.data import SplitRoles
from bench.runner import execute
from bench.runs import make_run_config
from bench.selection import SELECTION_RULES, ValidationChoices, select_epochs, selection_meta
from bench.store import Store
from tests.conftest import TINY_DATA, TINY_HP

ROLES = SplitRoles(selection="val", validation=("val", "val_ood"), iid="iid", shifted=("ood",),
                   oracle="val_ood_acc", headline="ood_acc", group_kinds={0: "aligned", 1: "conflicting"},
                   unbiased_val="val_worst_group_acc")


def row(epoch: int, val_loss: float, val_ood: float = 0.0, worst: float = 0.0, selectable: bool = True,
        val_acc: float = 0.0) -> dict:
    return {"epoch": epoch, "val_loss": val_loss, "val_ood_acc": val_ood, "val_worst_group_acc": worst,
            "val_acc": val_acc, "selectable": selectable}


def test_each_rule_picks_its_epoch_and_the_earliest_of_ties() -> None:
    history = [row(1, 0.5, 0.2, 0.1, val_acc=0.3), row(2, 0.1, 0.9, 0.4, val_acc=0.8), row(3, 0.3, 0.9, 0.7),
               row(4, 0.1, 0.1, 0.7, val_acc=0.8)]
    chosen = select_epochs(history, ROLES)
    assert chosen["iid_val_acc"]["epoch"] == 2  # 0.8 twice: the earlier
    assert chosen["iid_val"]["epoch"] == 2  # 0.1 twice: the earlier
    assert chosen["oracle"]["epoch"] == 2  # 0.9 twice: the earlier
    assert chosen["unbiased_val"]["epoch"] == 3  # 0.7 twice: the earlier
    assert chosen["last"]["epoch"] == 4


def test_epochs_marked_not_selectable_are_never_chosen() -> None:
    history = [row(1, 0.01, 0.99, 0.99, selectable=False), row(2, 0.5, 0.1, 0.1), row(3, 0.4, 0.2, 0.2),
               row(4, 0.0, 1.0, 1.0, selectable=False)]
    chosen = select_epochs(history, ROLES)
    assert {rule: r["epoch"] for rule, r in chosen.items()} == {"iid_val": 3, "oracle": 3, "unbiased_val": 3,
                                                                  "last": 3, "iid_val_acc": 2}
    assert select_epochs([row(1, 0.1, selectable=False)], ROLES) == {}


def test_the_running_choices_equal_each_rules_choice_over_the_whole_history() -> None:
    """``ValidationChoices`` (one epoch at a time) chooses what ``SelectionRule.choose`` chooses on the whole
    history, ties and unselectable epochs included, for every rule that reads validation data only."""
    generator = torch.Generator().manual_seed(0)
    for trial in range(50):
        n = int(torch.randint(1, 30, (1,), generator=generator))
        values = torch.randint(0, 4, (n, 4), generator=generator).float() / 4  # coarse values: many ties
        selectable = torch.rand(n, generator=generator) > 0.2
        history = [row(i + 1, *values[i, :3].tolist(), selectable=bool(selectable[i]), val_acc=float(values[i, 3]))
                   for i in range(n)]
        splits = ["val", "val_ood", "iid", "ood"]
        running = ValidationChoices(ROLES, splits)
        for i, epoch_row in enumerate(history):
            would = running.would_choose(epoch_row)
            running.add(epoch_row)
            assert would == (epoch_row["epoch"] in running.epochs() and any(
                SELECTION_RULES.get(name).choose(history[:i + 1], ROLES) is epoch_row for name in running.rules))
        assert set(running.rules) == {"iid_val", "iid_val_acc", "oracle", "unbiased_val"}  # oracle: on val_ood
        for name in running.rules:
            assert running.chosen(name) is SELECTION_RULES.get(name).choose(history, ROLES), (trial, name)
        assert ValidationChoices(ROLES, splits, history).epochs() == running.epochs()


def test_rules_that_do_not_apply_are_absent_and_described() -> None:
    plain = SplitRoles(selection="val", validation=("val",), iid="iid", shifted=("ood",), oracle="ood_acc",
                       headline="ood_acc", group_kinds={})
    history = [{"epoch": 1, "val_loss": 0.2, "ood_acc": 0.5}]  # no val_acc recorded: iid_val_acc chooses nothing
    assert set(select_epochs(history, plain)) == {"iid_val", "last", "oracle"}
    meta = selection_meta(plain, ["val", "iid", "ood"])
    assert meta["oracle"]["metric"] == "ood_acc" and meta["oracle"]["on_test_split"] is True
    assert selection_meta(ROLES, ["val", "val_ood", "iid", "ood"])["oracle"]["on_test_split"] is False
    assert "unbiased_val" not in meta
    assert SELECTION_RULES.get("iid_val").describe(plain, ["val"])["metric"] == "val_loss"


def test_best_checkpoint_is_the_epoch_the_rule_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a validation loss that ties, ``best.pt`` must hold the earliest of the tied epochs, the one whose
    metrics ``iid_val`` reports (two separate tie rules used to disagree here)."""
    import bench.runner as runner

    monkeypatch.setattr(runner._Training, "_val_loss", lambda self, known: 0.25)  # every epoch ties
    cfg = make_run_config("erm", "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 3}, TINY_DATA)
    store = Store(tmp_path)
    record = execute(cfg, store, torch.device("cpu"), progress=False)
    assert record["final"]["iid_val"]["epoch"] == 1
    assert load_checkpoint(store.run_dir(cfg.run_id) / "best.pt", torch.device("cpu"))["epoch"] == 1
    assert record["meta"]["checkpoint_rule"] == "iid_val"


def test_oracle_rows_exist_where_split_names_hid_them(tmp_path: Path) -> None:
    """cmnist_lff has no split named 'ood': its roles make the unbiased test split the oracle's target."""
    from bench.data import DATASETS

    cfg = make_run_config("erm", "cmnist_lff", "fast", 0, {**TINY_HP, "epochs": 2},
                          DATASETS.get("cmnist_lff").test_options)
    record = execute(cfg, Store(tmp_path), torch.device("cpu"), progress=False)
    assert set(record["final"]) == {"iid_val", "iid_val_acc", "last", "oracle"}
    assert record["meta"]["selection"]["oracle"] == {**record["meta"]["selection"]["oracle"],
                                                     "metric": "unbiased_acc", "on_test_split": True}
    assert "iid_unbiased_gap" in record["final"]["last"]


def test_eval_every_skips_evaluations_and_selection_of_those_epochs(tmp_path: Path) -> None:
    cfg = make_run_config("erm", "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 3, "eval_every": 2}, TINY_DATA)
    store = Store(tmp_path)
    record = execute(cfg, store, torch.device("cpu"), progress=False)
    rows = store.epochs(cfg.run_id)
    assert [("val_loss" in row, row["selectable"]) for row in rows] == [(False, False), (True, True), (True, True)]
    assert record["final"]["iid_val"]["epoch"] in (2, 3) and record["final"]["last"]["epoch"] == 3


def test_cadence_options_keep_the_run_ids_of_runs_made_before_them() -> None:
    before = make_run_config("erm", "coloured_mnist", "fast", 0, TINY_HP, TINY_DATA)
    same = make_run_config("erm", "coloured_mnist", "fast", 0, {**TINY_HP, "eval_every": 1, "test_every": 1},
                           TINY_DATA)
    assert same.run_id == before.run_id and "test_every" not in before.hparams


@pytest.mark.parametrize("method", ["erm", "dfa"])  # dfa: two networks and a predict of its own
def test_tests_are_measured_where_a_validation_rule_could_choose_and_the_choice_is_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """With ``test_every`` larger than the run, the test splits are measured exactly at the epochs the rules finally
    choose (from the states kept while they were the best so far) and at the last; every rule reading validation
    data picks the same epoch with the same numbers as a run that tests every epoch, and no kept state is left."""
    import bench.runner as runner

    losses = iter([0.9, 0.5, 0.7, 0.4, 0.6, 0.8])  # new bests at epochs 1, 2 and 4
    real = runner._Training._val_loss
    monkeypatch.setattr(runner._Training, "_val_loss", lambda self, known: (real(self, known), next(losses))[1])
    hp = {**TINY_HP, "epochs": 6}
    cfg = make_run_config(method, "coloured_mnist", "fast", 0, {**hp, "test_every": 100}, TINY_DATA)
    store = Store(tmp_path / "sparse")
    sparse = execute(cfg, store, torch.device("cpu"), progress=False)
    tested = [row["epoch"] for row in store.epochs(cfg.run_id) if "iid_acc" in row]
    assert set(tested) == {6} | {row["epoch"] for row in sparse["final"].values()}
    assert len(_acc_bests(store.epochs(cfg.run_id))) + 3 > len(tested)  # superseded bests were not tested
    assert all("val_acc" in row for row in store.epochs(cfg.run_id))  # validation at every epoch
    assert not list((store.run_dir(cfg.run_id) / "candidates").glob("*"))

    losses = iter([0.9, 0.5, 0.7, 0.4, 0.6, 0.8])
    full_cfg = make_run_config(method, "coloured_mnist", "fast", 0, hp, TINY_DATA)
    full = execute(full_cfg, Store(tmp_path / "full"), torch.device("cpu"), progress=False)
    for rule in ("iid_val", "iid_val_acc", "last"):
        assert sparse["final"][rule] == full["final"][rule]
    assert sparse["final"]["iid_val"]["epoch"] == 4


def _acc_bests(rows: list[dict]) -> list[int]:
    best, out = -1.0, []
    for row in rows:
        if row["val_acc"] > best:
            best = row["val_acc"]
            out.append(row["epoch"])
    return out


@pytest.mark.parametrize("lost", [False, True])
def test_a_run_interrupted_while_it_keeps_untested_states_resumes_to_the_same_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lost: bool) -> None:
    """Killed after epoch 3 with the untested best epoch 2 kept on disk: the resumed run tests the finally chosen
    epochs from their kept states and reports what the uninterrupted run reports. Had the kept state been lost,
    the run trains again from the start (its epoch 2 could no longer be tested) and still reports the same."""
    import bench.runner as runner

    real = runner._Training._val_loss

    def scripted(*losses: float) -> None:
        values = iter(losses)
        monkeypatch.setattr(runner._Training, "_val_loss", lambda self, known: (real(self, known), next(values))[1])

    cfg = make_run_config("erm", "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 5, "test_every": 100},
                          TINY_DATA)
    scripted(0.9, 0.5, 0.7, 0.6, 0.8)  # iid_val chooses epoch 2, kept while later epochs train
    reference = execute(cfg, Store(tmp_path / "reference"), torch.device("cpu"), progress=False)

    store = Store(tmp_path / "interrupted")
    original = runner._Training._checkpoint

    def checkpoint(self: runner._Training, epoch: int, history: list) -> None:
        original(self, epoch, history)
        if epoch == 3:
            assert (self.run_dir / "candidates" / "epoch-2.pt").exists()
            raise KeyboardInterrupt

    scripted(0.9, 0.5, 0.7)
    monkeypatch.setattr(runner._Training, "_checkpoint", checkpoint)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, store, torch.device("cpu"), progress=False)
    monkeypatch.setattr(runner._Training, "_checkpoint", original)
    if lost:
        (store.run_dir(cfg.run_id) / "candidates" / "epoch-2.pt").unlink()
    scripted(*([0.9, 0.5, 0.7, 0.6, 0.8] if lost else [0.6, 0.8]))
    resumed = execute(cfg, store, torch.device("cpu"), progress=False)
    assert resumed["final"]["iid_val"]["epoch"] == 2 and "iid_acc" in resumed["final"]["iid_val"]
    assert resumed["final"] == reference["final"]
