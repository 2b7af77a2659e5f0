"""Build the benchmark report from a results store: Markdown, self-contained HTML, LaTeX, CSV tables and
PNG plots, all under ``<results>/report/``.

The report reads only the store and the runs' saved artifacts (``gallery.npz``); it never trains and needs
no model code.
It is deterministic: regenerating it from the same store gives byte-identical files. Accuracies are in
percent, as mean ± sample standard deviation over seeds (ddof=1; "n/a" with one seed); leaderboard cells
add the 95 % Student-t confidence interval and a seed-paired t-test against ERM.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.artifacts import GALLERY_FILE, read_gallery
from bench.atomic import atomic_write_bytes, atomic_write_text
from reports import plots
from reports.blocks import (
    Block,
    Heading,
    Para,
    Plot,
    Table,
    html_page,
    latex_document,
    markdown,
    mean_std,
    slug,
    table_csv,
)
from reports.gallery import render_gallery
from reports.leaderboard import NOTE as LEADERBOARD_NOTE
from reports.leaderboard import budgets, leaderboard_table, metric_label
from reports.paper import METRIC_LABELS, comparison_rows, load_reference, reference_columns, references_for
from reports.records import ID_COLUMNS, ReportData, is_teacher, read_store, test_splits
from reports.splits import SPLIT_LABELS, has_groups, label

# rows are grouped by display labels; the registry names ride along (they are functions of the labels)
GROUP_KEYS = ["method_label", "dataset_label", "protocol", "selection", "method", "dataset"]
SUMMARY_COLUMNS = ["method", "dataset", "protocol", "selection", "n_seeds", "iid_split", "iid_acc", "iid_acc_std",
                   "headline", "headline_value", "headline_std"]
SELECTION_ORDER = ("iid_val", "iid_val_acc", "last", "oracle", "unbiased_val")
SELECTION_RULES = {
    "iid_val": "the epoch with the lowest IID-validation loss (the method's own objective on the biased"
               " validation split; no OOD labels used)",
    "last": "the last training epoch",
    "oracle": "the oracle rule: the epoch with the best value of the dataset's oracle metric ({metric})",
    "unbiased_val": "the epoch with the best {metric} on a group-balanced validation split (uses validation"
                    " group labels)",
}
ORACLE_MARKS = {True: " (ORACLE upper bound: selected with test labels)",
                False: " (oracle: selected on an OOD validation split)"}
STD_NOTE = "± = standard deviation over seeds (n/a with a single seed); values in percent."
MAX_ERROR_CHARS = 300
PERCENT_SUFFIXES = ("_acc", "_agreement", "_gap", "_shortcut_relevance")
EXPLANATION_METRICS = {"expl_cosine": "cosine to teacher", "expl_l1": "normalised L1 to teacher",
                       "shortcut_relevance": "relevance on shortcut (%)"}
TITLE = "Benchmark report"


# --- entry point ----------------------------------------------------------------------------
def write_report(results_dir: Path) -> Path:
    """Write ``results_dir/report`` from the store in ``results_dir`` and return that folder."""
    data = read_store(Path(results_dir))
    out = Path(results_dir) / "report"
    aggregate = aggregate_finals(data.finals)
    atomic_write_text(out / "summary.csv", summary_csv(aggregate, data.roles))
    blocks = document(data, aggregate)
    write_blocks(out, blocks)
    return out


def write_blocks(out: Path, blocks: list[Block]) -> None:
    """report.md, index.html, report.tex, tables/*.csv and plots/*.png (stale files of earlier reports removed)."""
    plot_blocks = [block for block in blocks if isinstance(block, Plot)]
    for plot in plot_blocks:
        atomic_write_bytes(out / "plots" / plot.name, plot.png)
    tables = [block for block in blocks if isinstance(block, Table) and block.name]
    for table in tables:
        atomic_write_text(out / "tables" / f"{table.name}.csv", table_csv(table))
    remove_stale(out / "plots", "*.png", {plot.name for plot in plot_blocks})
    remove_stale(out / "tables", "*.csv", {f"{table.name}.csv" for table in tables})
    atomic_write_text(out / "report.md", markdown(blocks))
    atomic_write_text(out / "index.html", html_page(blocks, TITLE))
    atomic_write_text(out / "report.tex", latex_document(blocks, TITLE))


def remove_stale(folder: Path, pattern: str, keep: set[str]) -> None:
    for path in sorted(folder.glob(pattern)) if folder.exists() else []:
        if path.name not in keep:
            path.unlink()


# --- aggregation ----------------------------------------------------------------------------
def is_percent(key: str) -> bool:
    """Metrics stored as fractions and reported in percent."""
    return key.endswith(PERCENT_SUFFIXES) or "_group_acc/" in key or "_group_agreement/" in key


def is_metric(key: str) -> bool:
    return is_percent(key) or key.endswith(("_expl_cosine", "_expl_l1"))


def aggregate_finals(finals: pd.DataFrame) -> pd.DataFrame:
    """Per method × dataset × protocol × selection: n_seeds and ``<metric>_mean``/``_std`` (percent where
    ``is_percent``)."""
    if finals.empty:
        return pd.DataFrame(columns=GROUP_KEYS + ["n_seeds"])
    metrics = [col for col in finals.columns if col not in ID_COLUMNS and is_metric(col)]
    scaled = finals[GROUP_KEYS].join(finals[metrics].astype(float) * [100 if is_percent(m) else 1 for m in metrics])
    grouped = scaled.groupby(GROUP_KEYS, sort=True, dropna=False)
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n_seeds", grouped.size())
    return stats.reset_index()


def summary_csv(aggregate: pd.DataFrame, roles: dict[str, dict[str, Any]]) -> str:
    """The summary table as CSV text: per method × dataset × protocol × selection, the IID accuracy and the
    dataset's headline metric (percent, rounded to 2 decimals, deterministic order)."""
    rows = []
    for _, row in aggregate.iterrows():
        role = roles[row["dataset_label"]]
        iid, headline = role.get("iid"), role["headline"]
        rows.append([row["method_label"], row["dataset_label"], row["protocol"], row["selection"], row["n_seeds"],
                     iid or "", *(rounded(row, f"{iid}_acc_{stat}") for stat in ("mean", "std")),
                     headline, *(rounded(row, f"{headline}_{stat}") for stat in ("mean", "std"))])
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    table = table.sort_values(["dataset", "protocol", "selection", "method"], kind="stable")
    return table.to_csv(index=False, lineterminator="\n")


def rounded(row: pd.Series, column: str) -> float:
    value = row.get(column, math.nan)
    return math.nan if pd.isna(value) else round(float(value), 2)


# --- splits and cells -----------------------------------------------------------------------
def pm(row: pd.Series, metric: str, digits: int = 2) -> str:
    """``mean ± std`` of ``metric`` in an aggregate row."""
    return mean_std(row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_std", math.nan), digits)


def number(value: Any, digits: int) -> str:
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def present(frame_: pd.DataFrame, column: str) -> bool:
    return column in frame_ and bool(frame_[column].notna().any())


def seed_text(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return f"{low} per method" if low == high else f"{low} to {high} per method (see the seeds column)"


# --- document -------------------------------------------------------------------------------
def document(data: ReportData, aggregate: pd.DataFrame) -> list[Block]:
    """The report as a list of blocks, rendered to every format alike."""
    blocks: list[Block] = [Heading(1, TITLE)]
    if data.finals.empty:
        blocks.append(Para("No finished runs in this results store yet: there is nothing to summarise."))
    if data.n_unfinished:
        blocks.append(Para(f"{data.n_unfinished} run(s) still pending or running are not included."))
    if data.unrecorded:
        blocks.append(Para(f"{len(data.unrecorded)} finished run(s) predate recorded split roles and are left out;"
                           " they are stale: re-running their suite re-runs them."))
    if any(is_teacher(run) for run in data.runs):
        blocks.append(Para("Teacher runs appear as rows of their own; they are the reference for the"
                           " teacher-agreement and explanation-similarity columns."))
    if not data.finals.empty:
        blocks += leaderboard_section(data)
    for (dataset, protocol), finals in data.finals.groupby(["dataset_label", "protocol"], sort=True):
        blocks += section(dataset, protocol, finals, aggregate, data)
    blocks += strength_section(data)
    blocks += failures(data.failed)
    return blocks


def leaderboard_section(data: ReportData) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Leaderboard"), Para(LEADERBOARD_NOTE)]
    for (dataset, protocol), finals in data.finals.groupby(["dataset_label", "protocol"], sort=True):
        blocks += leaderboard_table(dataset, protocol, finals, data.runs, data.roles[dataset])
    return blocks


def section(dataset: str, protocol: str, finals: pd.DataFrame, aggregate: pd.DataFrame,
            data: ReportData) -> list[Block]:
    """Every table and plot of one dataset × protocol."""
    here = aggregate[(aggregate["dataset_label"] == dataset) & (aggregate["protocol"] == protocol)]
    roles = data.roles[dataset]
    runs = [run for run in data.runs if run["dataset_label"] == dataset and run["protocol"] == protocol]
    stem = slug(f"{dataset}_{protocol}")
    chosen = here[here["selection"] == "iid_val"].dropna(axis=1, how="all")
    supervision = budgets(data.runs, dataset, protocol)
    blocks: list[Block] = [Heading(2, f"{dataset} / {protocol}"), Heading(3, "Accuracy")]
    for selection in ordered_selections(here["selection"]):
        rows = here[here["selection"] == selection].dropna(axis=1, how="all")
        blocks += accuracy_table(rows, selection, supervision, f"accuracy_{stem}_{selection}", roles,
                                 rule_meta(runs, selection))
    blocks += group_tables(chosen, stem, roles)
    blocks += explanation_table(chosen, stem, roles)
    blocks += paper_table(protocol, chosen, stem, runs)
    costs = data.costs[(data.costs["dataset_label"] == dataset) & (data.costs["protocol"] == protocol)]
    blocks += cost_table(costs, stem)
    curves = data.curves[(data.curves["dataset_label"] == dataset) & (data.curves["protocol"] == protocol)]
    blocks += plot_blocks(dataset, protocol, finals, curves, costs, roles)
    blocks += gallery_blocks(dataset, protocol, runs, data.folder, roles)
    return blocks


def rule_meta(runs: list[dict[str, Any]], selection: str) -> dict[str, Any]:
    """What a selection rule read on these runs (recorded by the runner; the same for every run of a dataset)."""
    for run in runs:
        meta = ((run.get("meta") or {}).get("selection") or {}).get(selection)
        if meta:
            return meta
    return {}


def ordered_selections(selections: pd.Series) -> list[str]:
    present_ = set(selections)
    return [s for s in SELECTION_ORDER if s in present_] + sorted(present_ - set(SELECTION_ORDER))


def rule_para(rows: pd.DataFrame, selection: str = "iid_val", note: str = STD_NOTE,
              meta: dict[str, Any] | None = None) -> Para:
    metric = (meta or {}).get("metric") or "?"
    rule = SELECTION_RULES.get(selection, f"the rule named '{selection}'").format(metric=metric)
    return Para(f"Checkpoint chosen by {rule}. Seeds: {seed_text(rows['n_seeds'])}. {note}")


def present_splits(rows: pd.DataFrame, roles: dict[str, Any], suffix: str = "_acc_mean") -> list[str]:
    """The dataset's test splits (IID first, then the shifted ones) that ``rows`` have values for."""
    return [s for s in test_splits(roles) if present(rows, f"{s}{suffix}")]


def accuracy_table(rows: pd.DataFrame, selection: str, budgets: dict[str, str], name: str, roles: dict[str, Any],
                   meta: dict[str, Any]) -> list[Block]:
    """Heading, rule sentence and table of one selection rule."""
    splits = present_splits(rows, roles)
    iid = roles.get("iid")
    gaps = [s for s in splits if present(rows, f"{iid}_{s}_gap_mean")]
    agreements = [s for s in splits if s != iid and present(rows, f"{s}_agreement_mean")]
    worst = [s for s in splits if present(rows, f"{s}_worst_group_acc_mean")
             and has_groups([c.removesuffix("_mean") for c in rows.columns], s)]
    columns = (["method", "supervision", "seeds"] + [label(s) for s in splits]
               + [f"{label(iid or '')}−{label(s)} gap" for s in gaps]
               + [f"teacher agreement {label(s)}" for s in agreements] + [f"worst-group {label(s)}" for s in worst])
    cells = [
        [row["method_label"], budgets.get(row["method_label"], "?"), str(row["n_seeds"])]
        + [pm(row, f"{s}_acc") for s in splits]
        + [pm(row, f"{iid}_{s}_gap") for s in gaps] + [pm(row, f"{s}_agreement") for s in agreements]
        + [pm(row, f"{s}_worst_group_acc") for s in worst]
        for _, row in rows.sort_values("method_label").iterrows()
    ]
    mark = ORACLE_MARKS[bool(meta.get("on_test_split"))] if selection == "oracle" else ""
    return [Heading(4, f"Selection: {selection}{mark}"), rule_para(rows, selection, meta=meta),
            Table(columns, cells, name)]


def group_columns(rows: pd.DataFrame, kind: str, roles: dict[str, Any]) -> list[tuple[str, str]]:
    """(split, group name) of the ``<split>_<kind>/<group>`` metrics present in ``rows``, in split order."""
    found = []
    for split in test_splits(roles):
        prefix = f"{split}_{kind}/"
        found += [(split, c[len(prefix):-len("_mean")]) for c in sorted(rows.columns)
                  if c.startswith(prefix) and c.endswith("_mean")]
    return found


def group_tables(rows: pd.DataFrame, stem: str, roles: dict[str, Any]) -> list[Block]:
    """Accuracy and teacher agreement per group (bias-aligned, bias-conflicting, ...) at iid_val selection."""
    blocks: list[Block] = []
    for kind, title in (("group_acc", "Accuracy per group"), ("group_agreement", "Teacher agreement per group")):
        pairs = group_columns(rows, kind, roles)
        if not pairs:
            continue
        metrics = [f"{split}_{kind}/{group}" for split, group in pairs]
        columns = ["method", "seeds"] + [f"{label(split)}: {group}" for split, group in pairs]
        cells = [[row["method_label"], str(row["n_seeds"])] + [pm(row, m) for m in metrics]
                 for _, row in rows.sort_values("method_label").iterrows()
                 if kind == "group_acc" or any(pd.notna(row.get(f"{m}_mean")) for m in metrics)]
        if cells:
            blocks += [Heading(3, title), rule_para(rows), Table(columns, cells, f"{kind}_{stem}")]
    return blocks


def explanation_table(rows: pd.DataFrame, stem: str, roles: dict[str, Any]) -> list[Block]:
    """Heatmap similarity to the teacher and relevance on the known shortcut region, per test split."""
    pairs = [(s, m) for s in test_splits(roles) for m in EXPLANATION_METRICS if present(rows, f"{s}_{m}_mean")]
    if not pairs:
        return []
    columns = ["method", "seeds"] + [f"{label(s)} {EXPLANATION_METRICS[m]}" for s, m in pairs]
    cells = [[row["method_label"], str(row["n_seeds"])]
             + [pm(row, f"{s}_{m}", 2 if m == "shortcut_relevance" else 3) for s, m in pairs]
             for _, row in rows.sort_values("method_label").iterrows()]
    note = ("Heatmaps: LRP-ε (ε = 0.01; Gradient×Input where LRP has no rule for the model) of the true class on"
            " the first 256 images of each test split, summed over channels. Cosine: mean cosine similarity to the"
            " teacher's heatmap of the same image (on the teacher's view), 1 = same direction. Normalised L1: mean"
            " ½‖a/‖a‖₁ − b/‖b‖₁‖₁, 0 = identical up to scale. Relevance on shortcut: mean share of an image's"
            " positive relevance on the dataset's known shortcut region (from its masks), in percent."
            " ± = standard deviation over seeds.")
    return [Heading(3, "Explanations"), rule_para(rows, note=note), Table(columns, cells, f"explanations_{stem}")]


def paper_table(protocol: str, rows: pd.DataFrame, stem: str, runs: list[dict[str, Any]]) -> list[Block]:
    """Ours (IID-validation selection) next to the published numbers that apply to this dataset variant (matched
    on the dataset family, its options and the registry method name), with the difference."""
    if not runs:
        return []
    ref = references_for(load_reference(), runs[0]["dataset"], runs[0]["config"].get("dataset_params") or {})
    pairs = reference_columns(ref)
    cells = comparison_rows(rows, ref)
    if not cells:
        return []
    sources = "; ".join(sorted(set(ref["source"])))
    columns = ["method", "seeds"] + [f"{label(s)}{'' if m == 'acc' else ' ' + METRIC_LABELS.get(m, m)} {part}"
                                     for s, m in pairs for part in ("ours", "paper", "Δ")]
    note = (f"Paper: {sources}. Ours: protocol '{protocol}', selection iid_val, {STD_NOTE} "
            "Δ = ours − paper (percentage points). The paper's own setting is the 'paper' protocol; other "
            "protocols differ from it (model, epochs) and are shown for orientation only.")
    return [Heading(3, "Paper vs ours"), Para(note), Table(columns, cells, f"paper_{stem}")]


def cost_table(costs: pd.DataFrame, stem: str) -> list[Block]:
    """Mean cost over seeds per method."""
    rows = []
    for method, runs in costs.groupby("method_label", sort=True):
        devices = ", ".join(sorted({str(d) for d in runs.get("device", pd.Series(dtype=object)).dropna()})) or "–"
        rows.append([method, number(mean_of(runs, "train_seconds") / 60, 2),
                     number(mean_of(runs, "images_per_second"), 0),
                     number(mean_of(runs, "peak_memory_mb"), 0), devices])
    columns = ["method", "train minutes", "images/s", "peak memory MB", "device"]
    note = ("Mean over seeds (all finished runs). Train minutes: time in training steps, without evaluation. Peak"
            " memory: the GPU's peak allocation on CUDA, the process's peak RSS on the CPU.")
    return [Heading(3, "Cost"), Para(note), Table(columns, rows, f"cost_{stem}")]


def mean_of(frame_: pd.DataFrame, column: str) -> float:
    return float(frame_[column].astype(float).mean()) if column in frame_ else math.nan


def failures(failed: list[dict[str, Any]]) -> list[Block]:
    if not failed:
        return []
    rows = [[run["run_id"], run["method"], run["dataset"], run["protocol"], str(run["seed"]), one_line(run["error"])]
            for run in failed]
    return [Heading(2, "Failed runs"), Table(["run", "method", "dataset", "protocol", "seed", "error"], rows, "failed")]


def one_line(error: str | None) -> str:
    text = " ".join((error or "no error recorded").split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


# --- plots ----------------------------------------------------------------------------------
def plot_blocks(dataset: str, protocol: str, finals: pd.DataFrame, curves: pd.DataFrame,
                costs: pd.DataFrame, roles: dict[str, Any]) -> list[Block]:
    """Accuracy bars (iid_val), training curves and accuracy vs cost of one dataset × protocol."""
    stem = slug(f"{dataset}_{protocol}")
    blocks: list[Block] = []
    chosen = finals[finals["selection"] == "iid_val"].dropna(axis=1, how="all")
    bar_splits = [s for s in test_splits(roles) if present(chosen, f"{s}_acc")]
    if bar_splits:
        png = plots.render((8, 4), lambda fig: plots.draw_accuracy(fig, chosen, bar_splits, SPLIT_LABELS))
        blocks.append(Plot(f"{dataset} / {protocol}: accuracy at iid_val selection (bars = mean, dots = seeds)",
                           f"accuracy_{stem}.png", png))
    curve_splits = [s for s in [*roles["validation"], *test_splits(roles)] if present(curves, f"{s}_acc")]
    if curve_splits:
        png = plots.render((4 * len(curve_splits), 3.5),
                           lambda fig: plots.draw_curves(fig, curves, curve_splits, SPLIT_LABELS))
        blocks.append(Plot(f"{dataset} / {protocol}: accuracy per epoch (mean over seeds)", f"curves_{stem}.png", png))
    blocks += cost_plot(dataset, protocol, chosen, costs, stem, roles["headline"])
    return [Heading(3, "Plots"), *blocks] if blocks else []


def cost_plot(dataset: str, protocol: str, chosen: pd.DataFrame, costs: pd.DataFrame, stem: str,
              headline: str) -> list[Block]:
    """The dataset's headline metric against training time."""
    if headline not in chosen or "train_seconds" not in costs or chosen.empty:
        return []
    accuracy = chosen.groupby("method_label")[headline].mean() * 100
    minutes = costs.groupby("method_label")["train_seconds"].mean() / 60
    points = pd.DataFrame({"accuracy": accuracy, "minutes": minutes}).dropna().reset_index(names="method")
    if points.empty:
        return []
    metric = f"{metric_label(headline)} accuracy"
    png = plots.render((6, 4), lambda fig: plots.draw_cost(fig, points, metric))
    return [Plot(f"{dataset} / {protocol}: {metric} (iid_val selection) against training time",
                 f"cost_{stem}.png", png)]


def varying_parameter(runs: list[dict[str, Any]]) -> str | None:
    """The one numeric dataset option that differs between ``runs`` (all else equal), if there is one."""
    params = [run["config"].get("dataset_params") or {} for run in runs]
    keys = sorted({k for p in params for k in p})
    varying = [k for k in keys if len({json.dumps(p.get(k)) for p in params}) > 1]
    if len(varying) != 1:
        return None
    values = [p.get(varying[0]) for p in params]
    return varying[0] if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) else None


def strength_section(data: ReportData) -> list[Block]:
    """Accuracy against the bias strength or bias-conflicting ratio, for families run at several values (one line
    per registry method)."""
    blocks: list[Block] = []
    by_family: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in data.runs:
        by_family.setdefault((run["dataset"], run["protocol"]), []).append(run)
    for (family, protocol), runs in sorted(by_family.items()):
        parameter = varying_parameter(runs)
        if parameter is None:
            continue
        roles = data.roles[runs[0]["dataset_label"]]
        rows = []
        for run in runs:
            final = (run["final"] or {}).get("iid_val") or {}
            rows.append({"method": run["method"], "value": float(run["config"]["dataset_params"][parameter]),
                         **{k: v for k, v in final.items() if k.endswith("_acc") and "/" not in k}})
        table = pd.DataFrame(rows)
        metrics = [f"{s}_acc" for s in test_splits(roles) if f"{s}_acc" in table]
        if table["value"].nunique() < 2 or not metrics:
            continue
        labels = {f"{s}_acc": f"{label(s)} accuracy" for s in test_splits(roles)}
        paper = published_against(family, parameter)
        png = plots.render((4 * len(metrics), 3.5), functools.partial(plots.draw_strength, frame=table,
                                                                        parameter=parameter, metrics=metrics,
                                                                        labels=labels, paper=paper))
        blocks.append(Plot(f"{family} / {protocol}: accuracy against {parameter} (iid_val selection; mean ± std over"
                           " seeds; dashed: the paper's numbers where published, in its own setting)",
                           f"strength_{slug(family + '_' + protocol)}.png", png))
    return [Heading(2, "Bias strength"), *blocks] if blocks else []


def published_against(family: str, parameter: str) -> pd.DataFrame:
    """Reference accuracies for ``family`` given at several values of dataset option ``parameter``: method, value,
    metric (``<split>_acc``), paper."""
    reference = load_reference()
    rows = [{"method": ref.method, "value": float(ref.dataset_params[parameter]), "metric": f"{ref.split}_acc",
             "paper": float(ref.value)}
            for ref in reference[(reference["metric"] == "acc") & (reference["dataset"] == family)].itertuples()
            if parameter in ref.dataset_params and not pd.isna(ref.value)]
    return pd.DataFrame(rows, columns=["method", "value", "metric", "paper"])


# --- galleries ------------------------------------------------------------------------------
def gallery_blocks(dataset: str, protocol: str, runs: list[dict[str, Any]], folder: Path | None,
                   roles: dict[str, Any]) -> list[Block]:
    """The same test images with the teacher's heatmap and each method's (lowest seed of each method), from the
    gallery records the runs saved (rendered only: no model code)."""
    if folder is None:
        return []
    records: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run["method_label"] not in records:
            record = read_gallery(folder / "runs" / run["run_id"] / GALLERY_FILE)
            if record is not None:
                records[run["method_label"]] = {**record, "trains_teacher": is_teacher(run)}
    if not records:
        return []
    first = next(iter(records.values()))
    same = {m: r for m, r in records.items()
            if list(r["splits"]) == list(first["splits"]) and list(r["indices"]) == list(first["indices"])}
    picked: list[tuple[str, dict[str, Any], int]] = []  # (column name, record, its column index)
    teacher = next((r for r in same.values() if "teacher" in list(r["columns"])), None)
    if teacher is not None:
        picked.append(("teacher", teacher, list(teacher["columns"]).index("teacher")))
    picked += [(method, record, list(record["columns"]).index("student")) for method, record in sorted(same.items())
               if teacher is None or not record["trains_teacher"]]
    titles = [f"{name}\n{record['explainers'][k]}" for name, record, k in picked]
    gallery = {**first, "maps": np.stack([record["maps"][k] for _, record, k in picked]),
               "preds": np.stack([record["preds"][k] for _, record, k in picked]),
               "columns": np.array([name for name, _, _ in picked])}
    png = render_gallery(gallery, titles)
    title = (f"{dataset} / {protocol}: heatmaps of the true class on the same bias-aligned and bias-conflicting test"
             " images (best checkpoint of each method's lowest seed; red > 0, blue < 0, each map scaled to its own"
             " max |value|)")
    return [Heading(3, "Explanation gallery"), Plot(title, f"gallery_{slug(dataset + '_' + protocol)}.png", png)]
