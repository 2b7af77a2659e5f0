"""The leaderboard: per dataset × protocol, every method's accuracy with 95 % confidence intervals over seeds,
its supervision budget, and a seed-paired comparison with ERM.

``results/leaderboard/records.jsonl`` holds the committed run records (exported from results stores with
``python run_bench.py leaderboard --add DIR``); ``results/leaderboard/leaderboard.md`` and ``.csv`` are
regenerated from it by ``python run_bench.py leaderboard``, and a test checks they match.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench.atomic import atomic_write_text
from bench.errors import UserError
from bench.store import Store
from reports.blocks import Block, Heading, Para, Table, markdown, slug, table_csv
from reports.records import report_data
from reports.splits import has_groups, label, splits_of
from reports.stats import ALPHA, CONFIDENCE, paired_comparison, t_interval

LEADERBOARD_DIR = Path(__file__).resolve().parent.parent / "results" / "leaderboard"
RECORD_KEYS = ("run_id", "method", "dataset", "protocol", "seed", "model", "config", "status", "final", "cost",
               "provenance")
BASELINE = "erm"
SELECTION = "iid_val"
SUPERVISION_LABELS = {"labels": "labels", "group_labels": "group labels", "masks": "masks", "teacher": "teacher",
                      "debiased_view": "debiased view", "unbiased_validation": "unbiased validation"}
NOTE = (f"Selection: {SELECTION} (the epoch with the lowest loss on the biased IID validation split; no OOD labels). "
        f"Cells: mean over seeds [{CONFIDENCE:.0%} Student-t confidence interval of the mean; none with one seed], in"
        f" percent; intervals are not clipped to [0, 100]. Δ {BASELINE.upper()}: mean seed-paired difference to"
        f" {BASELINE.upper()} on the first non-IID split,"
        f" with the two-sided paired t-test's p-value over the common seeds; ▲/▼ = significantly better/worse at"
        f" p < {ALPHA}. Supervision: what the method uses; 'teacher(...)' is what its teacher was trained with."
        " Rows are sorted by the first non-IID split.")


# --- supervision ------------------------------------------------------------------------------
def supervision_items(run: dict[str, Any]) -> list[str] | None:
    """The run's recorded budget, or the registry's for records written before budgets were recorded."""
    recorded = (run.get("meta") or {}).get("supervision", (run.get("provenance") or {}).get("supervision"))
    if recorded is not None:
        return list(recorded)
    from bench.method import supervision_budget

    try:
        teacher = (run["config"].get("teacher") or {}).get("method")
        return supervision_budget(run["config"]["method"], teacher)
    except UserError:
        return None


def budgets(runs: list[dict[str, Any]], dataset: str, protocol: str) -> dict[str, str]:
    """Method label → supervision text, for the runs of one dataset × protocol."""
    return {run["method"]: supervision_text(run) for run in runs
            if run["dataset"] == dataset and run["protocol"] == protocol}


def supervision_text(run: dict[str, Any]) -> str:
    """e.g. ``teacher(labels, debiased view)`` or ``labels``."""
    items = supervision_items(run)
    if items is None:
        return "?"
    own = [SUPERVISION_LABELS.get(i, i) for i in items if not i.startswith("teacher:")]
    inherited = [SUPERVISION_LABELS.get(i[8:], i[8:]) for i in items if i.startswith("teacher:")]
    return ", ".join(f"teacher({', '.join(inherited)})" if item == "teacher" and inherited else item for item in own)


# --- the table ------------------------------------------------------------------------------
def leaderboard_splits(finals: pd.DataFrame) -> list[str]:
    """IID first, then the other test splits in the order the report uses."""
    return [s for s in splits_of(finals.dropna(axis=1, how="all").columns) if s != "val"]


def cell(values: list[float]) -> str:
    mean, half = t_interval(values)
    if math.isnan(mean):
        return "–"
    if math.isnan(half):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}]"


def baseline_of(methods: list[str]) -> str | None:
    if BASELINE in methods:
        return BASELINE
    candidates = [m for m in methods if m.startswith(BASELINE + " [")]
    return candidates[0] if len(candidates) == 1 else None


def leaderboard_table(dataset: str, protocol: str, finals: pd.DataFrame, runs: list[dict[str, Any]]) -> list[Block]:
    """The leaderboard table of one dataset × protocol (finals: its rows, all selections)."""
    chosen = finals[finals["selection"] == SELECTION]
    if chosen.empty:
        return []
    splits = leaderboard_splits(chosen)
    headline = next((s for s in splits if s != "iid"), splits[0] if splits else None)
    if headline is None:
        return []
    supervision = budgets(runs, dataset, protocol)
    per_seed = {method: rows.set_index("seed") for method, rows in chosen.groupby("method", sort=True)}
    baseline = baseline_of(list(per_seed))
    worst = [s for s in splits if f"{s}_worst_group_acc" in chosen and chosen[f"{s}_worst_group_acc"].notna().any()
             and has_groups(chosen.dropna(axis=1, how="all").columns, s)]
    order = sorted(per_seed, key=lambda m: (-per_seed[m][f"{headline}_acc"].astype(float).mean(), m))
    rows = []
    for method in order:
        seeds = per_seed[method]
        values = {s: (seeds[f"{s}_acc"].astype(float) * 100).dropna().tolist() for s in splits}
        row = [method, supervision.get(method, "?"), str(len(seeds))] + [cell(values[s]) for s in splits]
        row += [cell((seeds[f"{s}_worst_group_acc"].astype(float) * 100).dropna().tolist()) for s in worst]
        row.append(versus_baseline(method, baseline, per_seed, headline))
        rows.append(row)
    columns = (["method", "supervision", "seeds"] + [f"{label(s)} acc." for s in splits]
               + [f"worst-group {label(s)}" for s in worst] + [f"Δ {BASELINE.upper()} {label(headline)} (p)"])
    name = f"leaderboard_{slug(dataset + '_' + protocol)}"
    return [Heading(3, f"{dataset} / {protocol}"), Table(columns, rows, name)]


def versus_baseline(method: str, baseline: str | None, per_seed: dict[str, pd.DataFrame], split: str) -> str:
    if baseline is None or method == baseline:
        return "–"
    column = f"{split}_acc"
    ours = {int(s): float(v) * 100 for s, v in per_seed[method][column].items()}
    base = {int(s): float(v) * 100 for s, v in per_seed[baseline][column].items()}
    result = paired_comparison(ours, base)
    if result.n == 0:
        return "no common seed"
    if math.isnan(result.p_value):
        p = "p n/a"
    else:
        p = "p < 0.001" if result.p_value < 0.001 else f"p {result.p_value:.3f}"
    return f"{result.difference:+.2f} ({p}){' ' + result.mark if result.mark else ''}"


# --- the committed leaderboard ------------------------------------------------------------------
def export_records(results_dir: Path) -> list[dict[str, Any]]:
    """The finished runs of a results store as plain records (no timestamps, no process owner)."""
    store = Store(results_dir, create=False)
    try:
        return [{key: run[key] for key in RECORD_KEYS} for run in store.runs("finished")]
    finally:
        store.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records from a JSON-lines file (one run per line); a damaged line is a UserError naming it."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number} is not valid JSON ({err.msg}); restore the file from git") from None
        if not isinstance(record, dict) or not set(RECORD_KEYS) <= set(record):
            raise UserError(f"{path}:{number} is not a run record; restore the file from git")
        records.append(record)
    return records


def records_text(records: list[dict[str, Any]]) -> str:
    unique = {record["run_id"]: record for record in records}
    return "".join(json.dumps(unique[k], sort_keys=True, ensure_ascii=False) + "\n" for k in sorted(unique))


def leaderboard_blocks(records: list[dict[str, Any]]) -> list[Block]:
    data = report_data(records, {}, None)
    blocks: list[Block] = [Heading(1, "Leaderboard"), Para(NOTE)]
    if data.finals.empty:
        return [*blocks, Para("No records yet: add some with `python run_bench.py leaderboard --add RESULTS_DIR`.")]
    devices = sorted({str((run.get("cost") or {}).get("device", "?")) for run in data.runs})
    blocks.append(Para(f"{len(data.runs)} runs; devices: {', '.join(devices)}. Regenerate with"
                       " `python run_bench.py leaderboard`; the records are results/leaderboard/records.jsonl."))
    for (dataset, protocol), finals in data.finals.groupby(["dataset", "protocol"], sort=True):
        blocks += leaderboard_table(dataset, protocol, finals, data.runs)
    return blocks


def leaderboard_files(records: list[dict[str, Any]]) -> dict[str, str]:
    """File name → text of the leaderboard rendered from ``records``."""
    blocks = leaderboard_blocks(records)
    tables = [block for block in blocks if isinstance(block, Table)]
    csv_text = "".join(f"# {table.name}\n{table_csv(table)}" for table in tables)
    return {"leaderboard.md": markdown(blocks), "leaderboard.csv": csv_text}


def update_leaderboard(add: Path | None = None, folder: Path = LEADERBOARD_DIR) -> Path:
    """Merge the finished runs of ``add`` (a results folder) into the records, then rewrite the leaderboard."""
    path = folder / "records.jsonl"
    records = read_records(path)
    if add is not None:
        merged = records + export_records(add)
        atomic_write_text(path, records_text(merged))
        records = read_records(path)
    for name, text in leaderboard_files(records).items():
        atomic_write_text(folder / name, text)
    return folder / "leaderboard.md"
