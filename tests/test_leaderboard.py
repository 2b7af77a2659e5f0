"""The committed leaderboard equals what `run_bench.py leaderboard` renders from the committed records;
records merge without duplicates; damaged records are a one-line user error."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import UserError
from bench.store import Store
from reports.leaderboard import (
    LEADERBOARD_DIR,
    export_records,
    leaderboard_files,
    read_records,
    update_leaderboard,
)
from run_bench import main
from tests.test_report import build_store


def test_committed_leaderboard_matches_its_records() -> None:
    records = read_records(LEADERBOARD_DIR / "records.jsonl")
    assert records, "results/leaderboard/records.jsonl is empty"
    for name, text in leaderboard_files(records).items():
        assert (LEADERBOARD_DIR / name).read_text() == text, (
            f"results/leaderboard/{name} is stale: run `python run_bench.py leaderboard` and commit it")


def test_add_merges_finished_runs_once(tmp_path: Path) -> None:
    build_store(tmp_path / "results")
    board = tmp_path / "board"
    update_leaderboard(tmp_path / "results", board)
    first = (board / "records.jsonl").read_text()
    update_leaderboard(tmp_path / "results", board)  # adding the same runs again changes nothing
    assert (board / "records.jsonl").read_text() == first
    records = read_records(board / "records.jsonl")
    assert len(records) == 15 and all(r["status"] == "finished" for r in records)  # failed/pending left out
    assert [r["run_id"] for r in records] == sorted(r["run_id"] for r in records)
    text = (board / "leaderboard.md").read_text()
    assert "| distill | teacher(labels, debiased view) | 2 | 85.00 [21.47, 148.53] |" in text
    assert "# leaderboard_coloured_mnist_standard" in (board / "leaderboard.csv").read_text()


def test_damaged_records_are_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"run_id": "x"}\n{not json\n')
    with pytest.raises(UserError, match="records.jsonl:1 is not a run record"):
        read_records(path)
    path.write_text("{not json\n")
    with pytest.raises(UserError, match="records.jsonl:1 is not valid JSON"):
        read_records(path)


def test_cli_add_of_a_folder_without_store_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", "--add", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_uncommitted_or_mixed_revisions_are_refused(tmp_path: Path) -> None:
    build_store(tmp_path / "results")
    records = export_records(tmp_path / "results")
    dirty = [{**r, "provenance": {**r["provenance"], "git": "abc+dirty"}} for r in records]
    with pytest.raises(UserError, match="uncommitted"):
        leaderboard_files(dirty)
    mixed = [{**r, "provenance": {**r["provenance"], "git": "def" if r["seed"] else "abc"}} for r in records]
    with pytest.raises(UserError, match="mixes runs of revisions"):
        leaderboard_files(mixed)
    board = tmp_path / "board"
    update_leaderboard(tmp_path / "results", board)
    before = (board / "records.jsonl").read_bytes()
    other = tmp_path / "other"
    build_store(other)
    store = Store(other)
    store._conn.execute("UPDATE runs SET provenance = json_set(provenance, '$.git', 'def')")
    store.close()
    with pytest.raises(UserError, match="mixes runs of revisions"):
        update_leaderboard(other, board)
    assert (board / "records.jsonl").read_bytes() == before  # nothing written
    update_leaderboard(other, board, fresh=True)
    assert "code revision def" in (board / "leaderboard.md").read_text()


def test_headline_is_the_datasets_declared_metric(tmp_path: Path) -> None:
    """Waterbirds-like ranks and compares on the worst test group, as its roles declare."""
    roles = {"selection": "val", "validation": ["val"], "iid": "test_id", "shifted": ["test", "test_ood"],
             "oracle": "test_worst_group_acc", "headline": "test_worst_group_acc",
             "unbiased_val": "val_worst_group_acc",
             "group_kinds": {"0": "aligned", "1": "conflicting", "2": "conflicting", "3": "aligned"}}
    records = []
    for method, (avg, worst) in {"erm": (0.9, 0.2), "jtt_like": (0.85, 0.6)}.items():
        for seed in (0, 1):
            final = {"epoch": 1, "val_loss": 0.1, "test_id_acc": 0.95, "test_acc": avg + seed / 100,
                     "test_ood_acc": worst, "test_worst_group_acc": worst + seed / 100,
                     "test_group_acc/a": avg, "test_group_acc/b": worst}
            records.append({"run_id": f"{method}-{seed}", "method": method, "dataset": "waterbirds_like",
                            "protocol": "fast", "seed": seed, "model": "m", "status": "finished",
                            "config": {"method": method, "hparams": {}, "dataset_params": {}, "teacher": None},
                            "final": {"iid_val": final}, "cost": {}, "provenance": {"git": "abc"}, "code": {},
                            "meta": {"roles": roles, "granted_fields": ["y"], "supervision": ["labels"]}})
    text = leaderboard_files(records)["leaderboard.md"]
    assert "Δ ERM worst-group test (p)" in text
    rows = [line for line in text.splitlines() if line.startswith("| jtt_like") or line.startswith("| erm")]
    assert rows[0].startswith("| jtt_like") and "+40.00" in rows[0]


def test_supervision_column_tells_true_group_labels_from_inferred_groups_and_none() -> None:
    from bench.method import supervision_budget
    from reports.leaderboard import supervision_text

    def text(method: str, granted: list[str]) -> str:
        return supervision_text({"meta": {"granted_fields": granted, "supervision": supervision_budget(method)}})

    assert text("groupdro", ["y", "group"]) == "labels, group labels"
    assert text("groupdro_inferred", ["y"]) == "labels, groups inferred"
    assert text("jtt", ["y"]) == "labels"
