"""The prepared GPU scripts run end to end here, on the CPU, with a budget too short to finish a run: the sweep
starts, is interrupted at the deadline, and the outputs (records, summary) are written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_reproduce_paper_stops_at_its_deadline_and_writes_its_outputs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "tests/gpu/reproduce_paper.py", "--minutes", "0.3", "--out", str(tmp_path),
                           "--workers", "1", "--reproduction", "tea-table1-dogs-gpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reproduction"] == "tea-table1-dogs-gpu" and summary["device"]
    assert summary["minutes"] < 3 and summary["finished_records"] == 0  # interrupted, nothing finished
    assert (tmp_path / "records.jsonl").read_text() == ""
    assert not list(tmp_path.glob("runs/runs/*/*.pt"))  # checkpoints removed
