"""Build the benchmark report from a results store: Markdown, self-contained HTML, LaTeX, CSV tables and
PNG plots, all under ``<results>/report/``.

The report reads only the store and the runs' saved artifacts (``explanations.pt``); it never trains.
It is deterministic: regenerating it from the same store gives byte-identical files. Accuracies are in
percent, as mean ± sample standard deviation over seeds (ddof=1; "n/a" with one seed); leaderboard cells
add the 95 % Student-t confidence interval and a seed-paired t-test against ERM.
"""
from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch

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
from reports.leaderboard import NOTE as LEADERBOARD_NOTE
from reports.leaderboard import budgets, leaderboard_table
from reports.paper import METRIC_LABELS, comparison_rows, load_reference, reference_columns
from reports.records import ID_COLUMNS, ReportData, read_store
from reports.splits import SPLIT_LABELS, has_groups, label, splits_of

GROUP_KEYS = ["method", "dataset", "protocol", "selection"]
SUMMARY_SPLITS = ("iid", "ood", "shift")
SUMMARY_COLUMNS = ["method", "dataset", "protocol", "selection", "n_seeds"] + [
    f"{split}_acc{suffix}" for split in SUMMARY_SPLITS for suffix in ("", "_std")
]
SELECTION_ORDER = ("iid_val", "last", "oracle")
SELECTION_RULES = {
    "iid_val": "the epoch with the lowest IID-validation loss (the method's own objective on the biased"
               " validation split; no OOD labels used)",
    "last": "the last training epoch",
    "oracle": "ORACLE, an upper bound and not a valid model selection: the epoch with the best OOD accuracy,"
              " chosen with test/OOD labels",
}
ORACLE_MARK = " (ORACLE upper bound: uses OOD test labels)"
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
    atomic_write_text(out / "summary.csv", summary_csv(aggregate))
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
    grouped = scaled.groupby(GROUP_KEYS, sort=True)
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n_seeds", grouped.size())
    return stats.reset_index()


def summary_csv(aggregate: pd.DataFrame) -> str:
    """The summary table as CSV text (percent, rounded to 2 decimals, deterministic order)."""
    table = pd.DataFrame({col: aggregate[col] for col in GROUP_KEYS + ["n_seeds"]})
    for split in SUMMARY_SPLITS:
        for suffix, stat in (("", "mean"), ("_std", "std")):
            source = f"{split}_acc_{stat}"
            values = aggregate[source] if source in aggregate else pd.Series(math.nan, index=aggregate.index)
            table[f"{split}_acc{suffix}"] = values.astype(float).map(lambda v: round(v, 2))
    table = table[SUMMARY_COLUMNS].sort_values(["dataset", "protocol", "selection", "method"], kind="stable")
    return table.to_csv(index=False, lineterminator="\n")


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
    if any(is_teacher(m) for m in data.costs["method"]):
        blocks.append(Para("Teacher runs (method names containing 'teacher') appear as rows of their own;"
                           " they are the reference for the teacher-agreement and explanation-similarity columns."))
    if not data.finals.empty:
        blocks += leaderboard_section(data)
    for (dataset, protocol), finals in data.finals.groupby(["dataset", "protocol"], sort=True):
        blocks += section(dataset, protocol, finals, aggregate, data)
    blocks += strength_section(data)
    blocks += failures(data.failed)
    return blocks


def is_teacher(method: str) -> bool:
    return "teacher" in method


def leaderboard_section(data: ReportData) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Leaderboard"), Para(LEADERBOARD_NOTE)]
    for (dataset, protocol), finals in data.finals.groupby(["dataset", "protocol"], sort=True):
        blocks += leaderboard_table(dataset, protocol, finals, data.runs)
    return blocks


def section(dataset: str, protocol: str, finals: pd.DataFrame, aggregate: pd.DataFrame,
            data: ReportData) -> list[Block]:
    """Every table and plot of one dataset × protocol."""
    here = aggregate[(aggregate["dataset"] == dataset) & (aggregate["protocol"] == protocol)]
    stem = slug(f"{dataset}_{protocol}")
    chosen = here[here["selection"] == "iid_val"].dropna(axis=1, how="all")
    supervision = budgets(data.runs, dataset, protocol)
    blocks: list[Block] = [Heading(2, f"{dataset} / {protocol}"), Heading(3, "Accuracy")]
    for selection in ordered_selections(here["selection"]):
        rows = here[here["selection"] == selection].dropna(axis=1, how="all")
        blocks += accuracy_table(rows, selection, supervision, f"accuracy_{stem}_{selection}")
    blocks += group_tables(chosen, stem)
    blocks += explanation_table(chosen, stem)
    blocks += paper_table(dataset, protocol, chosen, stem)
    costs = data.costs[(data.costs["dataset"] == dataset) & (data.costs["protocol"] == protocol)]
    blocks += cost_table(costs, stem)
    curves = data.curves[(data.curves["dataset"] == dataset) & (data.curves["protocol"] == protocol)]
    blocks += plot_blocks(dataset, protocol, finals, curves, costs)
    blocks += gallery_blocks(dataset, protocol, data)
    return blocks


def ordered_selections(selections: pd.Series) -> list[str]:
    present_ = set(selections)
    return [s for s in SELECTION_ORDER if s in present_] + sorted(present_ - set(SELECTION_ORDER))


def rule_para(rows: pd.DataFrame, selection: str = "iid_val", note: str = STD_NOTE) -> Para:
    rule = SELECTION_RULES.get(selection, f"the rule named '{selection}'")
    return Para(f"Checkpoint chosen by {rule}. Seeds: {seed_text(rows['n_seeds'])}. {note}")


def accuracy_table(rows: pd.DataFrame, selection: str, budgets: dict[str, str], name: str) -> list[Block]:
    """Heading, rule sentence and table of one selection rule."""
    splits = [s for s in splits_of(rows.columns, "_acc_mean") if s != "val"]
    gaps = [s for s in splits if present(rows, f"iid_{s}_gap_mean")]
    agreements = [s for s in splits if s != "iid" and present(rows, f"{s}_agreement_mean")]
    worst = [s for s in splits if present(rows, f"{s}_worst_group_acc_mean")
             and has_groups([c.removesuffix("_mean") for c in rows.columns], s)]
    columns = (["method", "supervision", "seeds"] + [label(s) for s in splits]
               + [f"IID−{label(s)} gap" for s in gaps] + [f"teacher agreement {label(s)}" for s in agreements]
               + [f"worst-group {label(s)}" for s in worst])
    cells = [
        [row["method"], budgets.get(row["method"], "?"), str(row["n_seeds"])] + [pm(row, f"{s}_acc") for s in splits]
        + [pm(row, f"iid_{s}_gap") for s in gaps] + [pm(row, f"{s}_agreement") for s in agreements]
        + [pm(row, f"{s}_worst_group_acc") for s in worst]
        for _, row in rows.sort_values("method").iterrows()
    ]
    mark = ORACLE_MARK if selection == "oracle" else ""
    return [Heading(4, f"Selection: {selection}{mark}"), rule_para(rows, selection), Table(columns, cells, name)]


def group_columns(rows: pd.DataFrame, kind: str) -> list[str]:
    """``<split>_<kind>/<group>`` metrics present in ``rows`` (aggregate), in split order."""
    found = [c[: -len("_mean")] for c in rows.columns if f"_{kind}/" in c and c.endswith("_mean")]
    order = {s: i for i, s in enumerate(splits_of(rows.columns, "_acc_mean"))}
    return sorted(found, key=lambda c: (order.get(c.split(f"_{kind}/")[0], 99), c))


def group_tables(rows: pd.DataFrame, stem: str) -> list[Block]:
    """Accuracy and teacher agreement per group (bias-aligned, bias-conflicting, ...) at iid_val selection."""
    blocks: list[Block] = []
    for kind, title in (("group_acc", "Accuracy per group"), ("group_agreement", "Teacher agreement per group")):
        metrics = group_columns(rows, kind)
        if not metrics:
            continue
        columns = ["method", "seeds"] + [f"{label(m.split(f'_{kind}/')[0])}: {m.split('/', 1)[1]}" for m in metrics]
        cells = [[row["method"], str(row["n_seeds"])] + [pm(row, m) for m in metrics]
                 for _, row in rows.sort_values("method").iterrows()
                 if kind == "group_acc" or any(pd.notna(row.get(f"{m}_mean")) for m in metrics)]
        if cells:
            blocks += [Heading(3, title), rule_para(rows), Table(columns, cells, f"{kind}_{stem}")]
    return blocks


def explanation_table(rows: pd.DataFrame, stem: str) -> list[Block]:
    """Heatmap similarity to the teacher and relevance on the known shortcut region, per test split."""
    pairs = [(s, m) for s in splits_of(rows.columns, "_acc_mean") for m in EXPLANATION_METRICS
             if present(rows, f"{s}_{m}_mean")]
    if not pairs:
        return []
    columns = ["method", "seeds"] + [f"{label(s)} {EXPLANATION_METRICS[m]}" for s, m in pairs]
    cells = [[row["method"], str(row["n_seeds"])] + [pm(row, f"{s}_{m}", 2 if m == "shortcut_relevance" else 3)
                                                      for s, m in pairs]
             for _, row in rows.sort_values("method").iterrows()]
    note = ("Heatmaps: LRP-ε (ε = 0.01; Gradient×Input where LRP has no rule for the model) of the true class on"
            " the first 256 images of each test split, summed over channels. Cosine: mean cosine similarity to the"
            " teacher's heatmap of the same image (on the teacher's view), 1 = same direction. Normalised L1: mean"
            " ½‖a/‖a‖₁ − b/‖b‖₁‖₁, 0 = identical up to scale. Relevance on shortcut: mean share of an image's"
            " positive relevance on the dataset's known shortcut region (from its masks), in percent."
            " ± = standard deviation over seeds.")
    return [Heading(3, "Explanations"), rule_para(rows, note=note), Table(columns, cells, f"explanations_{stem}")]


def paper_table(dataset: str, protocol: str, rows: pd.DataFrame, stem: str) -> list[Block]:
    """Ours (IID-validation selection) next to the published numbers, with the difference."""
    reference = load_reference()
    pairs = reference_columns(reference, dataset)
    cells = comparison_rows(rows, reference, dataset, pairs)
    if not cells:
        return []
    sources = "; ".join(sorted(set(reference[reference["dataset"] == dataset]["source"])))
    columns = ["method", "seeds"] + [f"{label(s)}{'' if m == 'acc' else ' ' + METRIC_LABELS.get(m, m)} {part}"
                                     for s, m in pairs for part in ("ours", "paper", "Δ")]
    note = (f"Paper: {sources}. Ours: protocol '{protocol}', selection iid_val, {STD_NOTE} "
            "Δ = ours − paper (percentage points). The paper's own setting is the 'paper' protocol; other "
            "protocols differ from it (model, epochs) and are shown for orientation only.")
    return [Heading(3, "Paper vs ours"), Para(note), Table(columns, cells, f"paper_{stem}")]


def cost_table(costs: pd.DataFrame, stem: str) -> list[Block]:
    """Mean cost over seeds per method."""
    rows = []
    for method, runs in costs.groupby("method", sort=True):
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
def headline_split(columns: Any) -> str | None:
    """The first test split that is not IID (OOD, shift, unbiased, ...): the accuracy plotted against cost."""
    candidates = [s for s in splits_of(columns) if s not in ("val", "iid")]
    return candidates[0] if candidates else None


def plot_blocks(dataset: str, protocol: str, finals: pd.DataFrame, curves: pd.DataFrame,
                costs: pd.DataFrame) -> list[Block]:
    """Accuracy bars (iid_val), training curves and accuracy vs cost of one dataset × protocol."""
    stem = slug(f"{dataset}_{protocol}")
    blocks: list[Block] = []
    chosen = finals[finals["selection"] == "iid_val"].dropna(axis=1, how="all")
    bar_splits = [s for s in splits_of(chosen.columns) if s != "val"]
    if bar_splits:
        png = plots.render((8, 4), lambda fig: plots.draw_accuracy(fig, chosen, bar_splits, SPLIT_LABELS))
        blocks.append(Plot(f"{dataset} / {protocol}: accuracy at iid_val selection (bars = mean, dots = seeds)",
                           f"accuracy_{stem}.png", png))
    curve_splits = splits_of(curves.dropna(axis=1, how="all").columns)
    if curve_splits:
        png = plots.render((4 * len(curve_splits), 3.5),
                           lambda fig: plots.draw_curves(fig, curves, curve_splits, SPLIT_LABELS))
        blocks.append(Plot(f"{dataset} / {protocol}: accuracy per epoch (mean over seeds)", f"curves_{stem}.png", png))
    blocks += cost_plot(dataset, protocol, chosen, costs, stem)
    return [Heading(3, "Plots"), *blocks] if blocks else []


def cost_plot(dataset: str, protocol: str, chosen: pd.DataFrame, costs: pd.DataFrame, stem: str) -> list[Block]:
    split = headline_split(chosen.columns)
    if split is None or "train_seconds" not in costs or chosen.empty:
        return []
    accuracy = chosen.groupby("method")[f"{split}_acc"].mean() * 100
    minutes = costs.groupby("method")["train_seconds"].mean() / 60
    points = pd.DataFrame({"accuracy": accuracy, "minutes": minutes}).dropna().reset_index(names="method")
    if points.empty:
        return []
    metric = f"{label(split)} accuracy"
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
    """Accuracy against the bias strength or bias-conflicting ratio, for families run at several values."""
    blocks: list[Block] = []
    by_family: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in data.runs:
        by_family.setdefault((run["family"], run["protocol"]), []).append(run)
    for (family, protocol), runs in sorted(by_family.items()):
        parameter = varying_parameter(runs)
        if parameter is None:
            continue
        rows = []
        for run in runs:
            final = (run["final"] or {}).get("iid_val") or {}
            method = run["method"].split(" [")[0] if " [" in run["method"] else run["method"]
            rows.append({"method": method, "value": float(run["config"]["dataset_params"][parameter]),
                         **{k: v for k, v in final.items() if k.endswith("_acc") and "/" not in k}})
        table = pd.DataFrame(rows)
        metrics = [f"{s}_acc" for s in splits_of(table.columns) if s not in ("val",)]
        if table["value"].nunique() < 2 or not metrics:
            continue
        labels = {f"{s}_acc": f"{label(s)} accuracy" for s in splits_of(table.columns)}
        paper = published_against(family, parameter)
        png = plots.render((4 * len(metrics), 3.5), functools.partial(plots.draw_strength, frame=table,
                                                                        parameter=parameter, metrics=metrics,
                                                                        labels=labels, paper=paper))
        blocks.append(Plot(f"{family} / {protocol}: accuracy against {parameter} (iid_val selection; mean ± std over"
                           " seeds; dashed: the paper's numbers where published, in its own setting)",
                           f"strength_{slug(family + '_' + protocol)}.png", png))
    return [Heading(2, "Bias strength"), *blocks] if blocks else []


def published_against(family: str, parameter: str) -> pd.DataFrame:
    """Reference accuracies for ``family`` run at several values of ``parameter`` (read off the reference's
    dataset labels, e.g. ``cmnist_lff [conflict_ratio=0.01]``): method, value, metric (``<split>_acc``), paper."""
    reference = load_reference()
    pattern = re.compile(rf"^{re.escape(family)} \[{re.escape(parameter)}=([0-9.eE+-]+)\]$")
    rows = []
    for ref in reference[reference["metric"] == "acc"].itertuples():
        match = pattern.match(str(ref.dataset))
        if match and not pd.isna(ref.value):
            rows.append({"method": ref.method, "value": float(match.group(1)), "metric": f"{ref.split}_acc",
                         "paper": float(ref.value)})
    return pd.DataFrame(rows, columns=["method", "value", "metric", "paper"])


# --- galleries ------------------------------------------------------------------------------
def gallery_blocks(dataset: str, protocol: str, data: ReportData) -> list[Block]:
    """The same test images with the teacher's heatmap and each method's (lowest seed of each method)."""
    if data.folder is None:
        return []
    records: dict[str, dict[str, Any]] = {}
    for run in data.runs:
        if run["dataset"] != dataset or run["protocol"] != protocol or run["method"] in records:
            continue
        record = read_gallery(data.folder / "runs" / run["run_id"] / "explanations.pt")
        if record:
            records[run["method"]] = record
    if not records:
        return []
    first = next(iter(records.values()))
    same = {m: r for m, r in records.items()
            if r["splits"] == first["splits"] and torch.equal(r["indices"], first["indices"])}
    columns = []
    teacher = next((r for r in same.values() if "teacher_maps" in r), None)
    if teacher is not None:
        columns.append(plots.GalleryColumn(f"teacher\n{teacher['teacher_explainer']}",
                                           teacher["teacher_maps"].float().numpy()))
    columns += [plots.GalleryColumn(f"{method}\n{r['explainer']}", r["maps"].float().numpy())
                for method, r in sorted(same.items()) if teacher is None or not is_teacher(method)]
    images = first["images"].numpy()
    groups = first["groups"].tolist()
    row_labels = [f"{first['splits'][i]} #{int(first['indices'][i])}\nlabel {int(first['labels'][i])}\n"
                  f"{'aligned' if g == 0 else 'conflicting'}" for i, g in enumerate(groups)]
    png = plots.render(plots.gallery_size(len(images), len(columns)),
                       lambda fig: plots.draw_gallery(fig, images, row_labels, columns), dpi=80)
    title = (f"{dataset} / {protocol}: heatmaps of the true class on the same bias-aligned and bias-conflicting test"
             " images (best checkpoint of each method's lowest seed; red > 0, blue < 0, each map scaled to its own"
             " max |value|)")
    return [Heading(3, "Explanation gallery"), Plot(title, f"gallery_{slug(dataset + '_' + protocol)}.png", png)]


def read_gallery(path: Path) -> dict[str, Any] | None:
    """A run's saved gallery record (tensors and plain values only), or None if missing or unreadable."""
    if not path.exists():
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    needed = {"images", "maps", "splits", "indices", "groups", "explainer"}
    return record if isinstance(record, dict) and needed <= set(record) else None

