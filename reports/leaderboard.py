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
from reports.records import report_data, test_splits
from reports.splits import has_groups, label
from reports.stats import ALPHA, CONFIDENCE, paired_comparison, t_interval

LEADERBOARD_DIR = Path(__file__).resolve().parent.parent / "results" / "leaderboard"
RECORD_KEYS = ("run_id", "method", "dataset", "protocol", "seed", "model", "config", "status", "final", "cost",
               "provenance", "code", "meta")
BASELINE = "erm"
SELECTION = "iid_val"
FIELD_ITEMS = {"y": "labels", "group": "group labels", "bias": "bias labels", "mask": "masks",
               "x_debiased": "debiased view"}
ITEM_LABELS = {"labels": "labels", "group_labels": "group labels", "bias_labels": "bias labels", "masks": "masks",
               "teacher": "teacher",
               "debiased_view": "debiased view"}
NOTE = (f"Selection: {SELECTION} (the epoch with the lowest loss on the biased IID validation split; no OOD labels). "
        f"Cells: mean over seeds [{CONFIDENCE:.0%} Student-t confidence interval of the mean; none with one seed], in"
        f" percent; intervals are not clipped to [0, 100]. Δ {BASELINE.upper()}: mean seed-paired difference to"
        f" {BASELINE.upper()} on the dataset's headline metric (declared by the dataset: e.g. OOD accuracy, unbiased"
        " accuracy, worst-group accuracy), with the two-sided paired t-test's p-value over the common seeds of the same"
        f" code revision; ▲/▼ = significantly better/worse at p < {ALPHA}. Supervision: what the method's runs could"
        " read (the engine hands a method only the fields its budget grants); 'teacher(...)' is what its teacher was"
        " trained with. Rows are sorted by the headline metric.")


# --- supervision ------------------------------------------------------------------------------
def supervision_text(run: dict[str, Any]) -> str:
    """What a run could read, e.g. ``labels`` or ``teacher(labels, debiased view)``: its granted batch fields,
    and its teacher's budget."""
    meta = run.get("meta") or {}
    granted = meta.get("granted_fields")
    if granted is None:
        return "?"
    supervision = meta.get("supervision") or []
    own = list(dict.fromkeys(FIELD_ITEMS[f] for f in sorted(granted, key=list(FIELD_ITEMS).index)
                             if not (f == "x_debiased" and "teacher" in supervision
                                     and "debiased_view" not in supervision)))
    own += [f"{item[9:]} inferred" for item in supervision if item.startswith("inferred:")]
    if "teacher" in supervision:
        inherited = [ITEM_LABELS.get(i[8:], i[8:]) for i in supervision if i.startswith("teacher:")]
        own.append(f"teacher({', '.join(inherited)})" if inherited else "teacher")
    return ", ".join(own) or "none"


def budgets(runs: list[dict[str, Any]], dataset: str, protocol: str) -> dict[str, str]:
    """Method label → supervision text, for the runs of one dataset label × protocol."""
    return {run["method_label"]: supervision_text(run) for run in runs
            if run["dataset_label"] == dataset and run["protocol"] == protocol}


def revision(run: dict[str, Any]) -> str:
    return str((run.get("provenance") or {}).get("git", "unknown"))


# --- the table ------------------------------------------------------------------------------
def cell(values: list[float]) -> str:
    mean, half = t_interval(values)
    if math.isnan(mean):
        return "–"
    if math.isnan(half):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}]"


def baseline_of(chosen: pd.DataFrame) -> str | None:
    """The ERM variant to compare with: the only one, or the one with the most seeds (then the first label)."""
    erm = chosen[chosen["method"] == BASELINE]
    if erm.empty:
        return None
    counts = erm.groupby("method_label").size()
    return str(sorted(counts.index, key=lambda label: (-counts[label], label))[0])


def leaderboard_table(dataset: str, protocol: str, finals: pd.DataFrame, runs: list[dict[str, Any]],
                      roles: dict[str, Any]) -> list[Block]:
    """The leaderboard table of one dataset label × protocol (finals: its rows, all selections)."""
    chosen = finals[finals["selection"] == SELECTION]
    headline = roles["headline"]
    if chosen.empty or headline not in chosen:
        return []
    splits = [s for s in test_splits(roles) if f"{s}_acc" in chosen]
    present = chosen.dropna(axis=1, how="all").columns
    worst = [s for s in splits if f"{s}_worst_group_acc" in present and has_groups(present, s)]
    supervision = budgets(runs, dataset, protocol)
    revisions = {run["run_id"]: revision(run) for run in runs}
    per_seed = {method: rows.set_index("seed") for method, rows in chosen.groupby("method_label", sort=True)}
    baseline = baseline_of(chosen)
    order = sorted(per_seed, key=lambda m: (-per_seed[m][headline].astype(float).mean(), m))
    rows = []
    for method in order:
        seeds = per_seed[method]
        row = [method, supervision.get(method, "?"), str(len(seeds))]
        row += [cell((seeds[f"{s}_acc"].astype(float) * 100).dropna().tolist()) for s in splits]
        row += [cell((seeds[f"{s}_worst_group_acc"].astype(float) * 100).dropna().tolist()) for s in worst]
        row.append(versus_baseline(method, baseline, per_seed, headline, revisions))
        rows.append(row)
    columns = (["method", "supervision", "seeds"] + [f"{label(s)} acc." for s in splits]
               + [f"worst-group {label(s)}" for s in worst] + [f"Δ {BASELINE.upper()} {metric_label(headline)} (p)"])
    name = f"leaderboard_{slug(dataset + '_' + protocol)}"
    heading = f"{dataset} / {protocol}" + (f" (Δ against {baseline})" if baseline and baseline != BASELINE else "")
    return [Heading(3, heading), Table(columns, rows, name)]


def metric_label(metric: str) -> str:
    """``ood_acc`` → ``OOD``; ``test_worst_group_acc`` → ``worst-group test``."""
    if metric.endswith("_worst_group_acc"):
        return f"worst-group {label(metric.removesuffix('_worst_group_acc'))}"
    return label(metric.removesuffix("_acc"))


def versus_baseline(method: str, baseline: str | None, per_seed: dict[str, pd.DataFrame], metric: str,
                    revisions: dict[str, str]) -> str:
    """Seed-paired difference to the baseline on ``metric``; a seed pairs only with the same seed of the same
    code revision."""
    if baseline is None or method == baseline:
        return "–"
    ours, base = per_seed[method], per_seed[baseline]
    key = {int(s): revisions.get(str(r), "?") for s, r in ours["run_id"].items()}
    base_key = {int(s): revisions.get(str(r), "?") for s, r in base["run_id"].items()}
    common = {s for s in key if base_key.get(s) == key[s]}
    result = paired_comparison({int(s): float(v) * 100 for s, v in ours[metric].items() if int(s) in common},
                               {int(s): float(v) * 100 for s, v in base[metric].items() if int(s) in common})
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
        return [{key: run.get(key) for key in RECORD_KEYS} for run in store.runs("finished")]
    finally:
        store.close()


def check_one_clean_revision(records: list[dict[str, Any]], where: str) -> str:
    """The one committed revision all ``records`` come from; else a UserError naming the fix."""
    revisions = sorted({revision(r) for r in records})
    bad = [r for r in revisions if r.endswith("+dirty") or r == "unknown"]
    if bad:
        raise UserError(f"{where} holds runs of an uncommitted or unknown tree ({bad[0]}); commit, re-run them from a "
                        "clean checkout, then add them")
    if len(revisions) > 1:
        raise UserError(f"{where} mixes runs of revisions {', '.join(r[:10] for r in revisions)}; the leaderboard "
                        "is made from one revision: re-run the suites at one revision and add with --fresh")
    missing = [r["run_id"] for r in records if not (r.get("meta") or {}).get("roles")]
    if missing:
        raise UserError(f"{where}: run {missing[0]} predates recorded split roles and budgets; re-run it")
    return revisions[0] if revisions else ""


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
    rev = check_one_clean_revision(records, "results/leaderboard/records.jsonl")
    data = report_data(records, {}, None)
    blocks: list[Block] = [Heading(1, "Leaderboard"), Para(NOTE)]
    if data.finals.empty:
        return [*blocks, Para("No records yet: add some with `python run_bench.py leaderboard --add RESULTS_DIR`.")]
    devices = sorted({str((run.get("provenance") or {}).get("device", "?")) for run in data.runs})
    blocks.append(Para(f"{len(data.runs)} runs, all of code revision {rev}; devices: {', '.join(devices)}. Regenerate"
                       " with `python run_bench.py leaderboard`; the records are results/leaderboard/records.jsonl."))
    for (dataset, protocol), finals in data.finals.groupby(["dataset_label", "protocol"], sort=True):
        blocks += leaderboard_table(dataset, protocol, finals, data.runs, data.roles[dataset])
    return blocks


def paper_blocks(records: list[dict[str, Any]]) -> list[Block]:
    """Paper vs ours for every dataset variant × protocol of the records that a published table covers."""
    from reports.report import aggregate_finals, paper_table  # the report's table; it imports this module

    data = report_data(records, {}, None)
    aggregate = aggregate_finals(data.finals)
    blocks: list[Block] = [Heading(1, "Paper vs ours"),
                           Para("Generated from results/leaderboard/records.jsonl by `python run_bench.py leaderboard`"
                                " (never edited by hand). Each table: our runs of one dataset variant and protocol at"
                                " IID-validation selection, next to the published numbers that apply to it.")]
    for (dataset, protocol), _ in data.finals.groupby(["dataset_label", "protocol"], sort=True):
        here = aggregate[(aggregate["dataset_label"] == dataset) & (aggregate["protocol"] == protocol)
                         & (aggregate["selection"] == SELECTION)].dropna(axis=1, how="all")
        runs = [r for r in data.runs if r["dataset_label"] == dataset and r["protocol"] == protocol]
        table = paper_table(protocol, here, slug(f"{dataset}_{protocol}"), runs)
        if table:
            blocks += [Heading(2, f"{dataset} / {protocol}"), *table[1:]]
    return blocks


def leaderboard_files(records: list[dict[str, Any]]) -> dict[str, str]:
    """File name → text of the leaderboard (and the paper-vs-ours tables) rendered from ``records``."""
    blocks = leaderboard_blocks(records)
    tables = [block for block in blocks if isinstance(block, Table)]
    csv_text = "".join(f"# {table.name}\n{table_csv(table)}" for table in tables)
    return {"leaderboard.md": markdown(blocks), "leaderboard.csv": csv_text,
            "paper.md": markdown(paper_blocks(records))}


def update_leaderboard(add: Path | None = None, folder: Path = LEADERBOARD_DIR, fresh: bool = False) -> Path:
    """Merge the finished runs of ``add`` (a results folder) into the records (``fresh``: replace them), then
    rewrite the leaderboard. Records of an uncommitted tree, or of another revision than those already there,
    are refused (nothing is written)."""
    path = folder / "records.jsonl"
    records = [] if fresh else read_records(path)
    if add is not None:
        merged = records + export_records(add)
        check_one_clean_revision(merged, f"{add} (with the committed records)" if records else str(add))
        atomic_write_text(path, records_text(merged))
        records = read_records(path)
    for name, text in leaderboard_files(records).items():
        atomic_write_text(folder / name, text)
    return folder / "leaderboard.md"
