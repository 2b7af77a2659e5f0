"""The committed leaderboard equals what `run_bench.py leaderboard` renders from the committed records;
records merge without duplicates; damaged records are a one-line user error."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import UserError
from reports.leaderboard import LEADERBOARD_DIR, leaderboard_files, read_records, update_leaderboard
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
