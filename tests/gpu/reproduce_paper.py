"""A seed-paper reproduction at its paper protocol, run on a lent GPU for as long as a time budget allows (not
collected by pytest). By default the Table 1 COLOURED MNIST column (ResNet18 student, ResNet34 teacher, the
appendix's epochs); ``--reproduction`` names another (tea-table1-dogs-gpu, tea-table1-scenes-gpu, ...):

    PYTHONPATH=. python tests/gpu/reproduce_paper.py --minutes 9 --out "$OUT" [--reproduction NAME]

It sweeps the reproduction's suite at its protocol on the GPU with concurrent worker processes (one run does not
fill an H100/H200 at 28×28), interrupts the sweep at the deadline (an interrupted run resumes from its last epoch
if the store is kept), then writes to OUT:
- ``records.jsonl``: the finished runs with their epoch histories, ready for
  ``python run_bench.py reproduce NAME --add`` once copied into a results folder, or to be merged with
  ``reports.reproduction.add_records``;
- ``runs/store.sqlite``: the store (checkpoints are removed to keep the output small);
- ``summary.json``: device name, revision, minutes used, run statuses.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.provenance import device_name, provenance
from bench.store import Store
from reports.leaderboard import records_text
from reports.reproduction import export_from_store, get_reproduction


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=9.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--reproduction", default="tea-table1-cmnist-gpu")
    args = parser.parse_args()
    rep = get_reproduction(args.reproduction)
    runs = args.out / "runs"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    command = [sys.executable, "run_bench.py", "sweep", rep.suite, "--protocol", rep.protocols[0], "--seeds", "1",
               "--out", str(runs), "--device", device.type, "--executor", "processes", "--workers",
               str(args.workers), "--no-report", "--quiet"]
    if device.type == "cuda":
        command.append("--cuda-graphs")
    start = time.time()
    proc = subprocess.Popen(command, start_new_session=True)
    try:
        proc.wait(timeout=args.minutes * 60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    minutes = (time.time() - start) / 60
    records = export_from_store(rep, runs)
    (args.out / "records.jsonl").write_text(records_text(records))
    store = Store(runs, create=False)
    statuses = {run["run_id"]: run["status"] for run in store.runs()}
    store.close()
    for checkpoint in runs.glob("runs/*/*.pt"):
        checkpoint.unlink()
    summary = {"reproduction": rep.name, "device": device_name(device), "revision": provenance(device).get("git"),
               "minutes": round(minutes, 2),
               "statuses": statuses, "finished_records": len(records)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
