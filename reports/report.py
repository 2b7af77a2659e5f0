"""Build the benchmark report (CSV, Markdown, self-contained HTML, PNG plots) from a results store.

The report reads only the SQLite store and is deterministic: regenerating it from the same store
yields byte-identical files (stable ordering, no timestamps, PNGs without a Software tag).
Accuracies are shown in percent as mean ± sample standard deviation over seeds (ddof=1); with a
single seed the standard deviation is undefined and is left empty in the CSV and shown as "n/a".
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import matplotlib
import matplotlib.style
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.atomic import atomic_write_bytes, atomic_write_text
from bench.store import Store
from reports.paper import METRIC_LABELS, comparison_rows, load_reference, reference_columns
from reports.variants import display_names

GROUP_KEYS = ["method", "dataset", "protocol", "selection"]
ID_COLUMNS = ["run_id", "method", "dataset", "protocol", "seed", "selection"]
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
SPLIT_LABELS = {"val": "val", "iid": "IID", "ood": "OOD", "shift": "shift"}
CURVE_SPLITS = ("val", "iid", "ood", "shift")
ORACLE_MARK = " (ORACLE upper bound: uses OOD test labels)"
STD_NOTE = "± = standard deviation over seeds (n/a with a single seed); values in percent."
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Heading:
    """A section heading (level 1 = title)."""

    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """A plain-text paragraph."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells."""

    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Plot:
    """A PNG plot, saved as ``plots/<name>`` and inlined into the HTML."""

    title: str
    name: str
    png: bytes


Block = Union[Heading, Para, Table, Plot]  # noqa: UP007 (a runtime alias: `|` needs Python 3.10+)


@dataclass(frozen=True)
class ReportData:
    """Everything the report needs, read from the store once."""

    finals: pd.DataFrame  # one row per (finished run, selection)
    costs: pd.DataFrame  # one row per finished run
    curves: pd.DataFrame  # one row per (finished run, epoch)
    failed: list[dict[str, Any]]
    n_unfinished: int


# --- entry point ----------------------------------------------------------------------------
def write_report(results_dir: Path) -> Path:
    """Write ``results_dir/report`` from the store in ``results_dir`` and return that folder."""
    data = _read_store(Path(results_dir))
    out = Path(results_dir) / "report"
    aggregate = _aggregate(data.finals)
    atomic_write_text(out / "summary.csv", _summary_csv(aggregate))
    blocks = _document(data, aggregate)
    plots = [block for block in blocks if isinstance(block, Plot)]
    for plot in plots:
        atomic_write_bytes(out / "plots" / plot.name, plot.png)
    _remove_stale_plots(out / "plots", {plot.name for plot in plots})
    atomic_write_text(out / "report.md", _markdown(blocks))
    atomic_write_text(out / "index.html", _html(blocks))
    return out


# --- reading --------------------------------------------------------------------------------
def _read_store(results_dir: Path) -> ReportData:
    """Read all runs (raises the store's UserError when there is no store) and their epochs."""
    store = Store(results_dir, create=False)
    try:
        runs = sorted(store.runs(), key=_run_order)
        finished = [run for run in runs if run["status"] == "finished"]
        epochs = {run["run_id"]: store.epochs(run["run_id"]) for run in finished}
    finally:
        store.close()
    names = display_names(runs)
    runs = [{**run, "method": names[run["run_id"]][0], "dataset": names[run["run_id"]][1]} for run in runs]
    runs.sort(key=_run_order)
    finished = [run for run in runs if run["status"] == "finished"]
    return ReportData(
        finals=_frame([_final_row(run, sel, metrics)
                       for run in finished for sel, metrics in (run["final"] or {}).items()], ID_COLUMNS),
        costs=_frame([{**_identity(run), **(run["cost"] or {})} for run in finished], ID_COLUMNS[:5]),
        curves=_frame([{**_identity(run), **epoch} for run in finished for epoch in epochs[run["run_id"]]],
                      ID_COLUMNS[:5] + ["epoch"]),
        failed=[run for run in runs if run["status"] == "failed"],
        n_unfinished=sum(run["status"] in ("pending", "running") for run in runs),
    )


def _run_order(run: dict[str, Any]) -> tuple[str, str, str, int, str]:
    return run["dataset"], run["protocol"], run["method"], run["seed"], run["run_id"]


def _identity(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in ("run_id", "method", "dataset", "protocol", "seed")}


def _final_row(run: dict[str, Any], selection: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {**_identity(run), "selection": selection, **metrics}


def _frame(rows: list[dict[str, Any]], leading: list[str]) -> pd.DataFrame:
    """A DataFrame with ``leading`` columns first, then the others in sorted order."""
    extra = sorted({key for row in rows for key in row} - set(leading))
    return pd.DataFrame(rows, columns=leading + extra)


# --- aggregation ----------------------------------------------------------------------------
def _is_percent(key: str) -> bool:
    """Metrics stored as fractions and reported in percent."""
    return key.endswith(("_acc", "_agreement", "_gap"))


def _aggregate(finals: pd.DataFrame) -> pd.DataFrame:
    """Per method × dataset × protocol × selection: n_seeds and ``<metric>_mean``/``_std`` in percent."""
    if finals.empty:
        return pd.DataFrame(columns=GROUP_KEYS + ["n_seeds"])
    metrics = [col for col in finals.columns if col not in ID_COLUMNS and _is_percent(col)]
    scaled = finals[GROUP_KEYS].join(finals[metrics].astype(float) * 100)
    grouped = scaled.groupby(GROUP_KEYS, sort=True)
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n_seeds", grouped.size())
    return stats.reset_index()


def _summary_csv(aggregate: pd.DataFrame) -> str:
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
def _splits(columns: Any, suffix: str = "_acc") -> list[str]:
    """Splits named by ``<split><suffix>`` columns: val, iid, ood, shift first, then the others sorted."""
    found = {
        col[: -len(suffix)] for col in columns
        if col.endswith(suffix) and "/" not in col and not col.endswith("_worst_group" + suffix)
    }
    return [s for s in CURVE_SPLITS if s in found] + sorted(found - set(CURVE_SPLITS))


def _label(split: str) -> str:
    return SPLIT_LABELS.get(split, split)


def _pm(row: pd.Series, metric: str) -> str:
    """Format ``mean ± std`` for ``metric`` of an aggregate row."""
    mean, std = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_std", math.nan)
    if pd.isna(mean):
        return "–"
    return f"{mean:.2f} ± {'n/a' if pd.isna(std) else f'{std:.2f}'}"


def _number(value: Any, digits: int) -> str:
    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def _present(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and bool(frame[column].notna().any())


# --- document -------------------------------------------------------------------------------
def _document(data: ReportData, aggregate: pd.DataFrame) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and HTML alike."""
    blocks: list[Block] = [Heading(1, "Benchmark report")]
    if data.finals.empty:
        blocks.append(Para("No finished runs in this results store yet: there is nothing to summarise."))
    if data.n_unfinished:
        blocks.append(Para(f"{data.n_unfinished} run(s) still pending or running are not included."))
    if any(_is_teacher(m) for m in data.costs["method"]):
        blocks.append(Para("Teacher runs (method names containing 'teacher') appear as rows of their own;"
                           " they are the reference for the teacher-agreement columns."))
    for (dataset, protocol), finals in data.finals.groupby(["dataset", "protocol"], sort=True):
        blocks += _section(dataset, protocol, finals, aggregate, data)
    blocks += _failures(data.failed)
    return blocks


def _is_teacher(method: str) -> bool:
    return "teacher" in method


def _section(dataset: str, protocol: str, finals: pd.DataFrame, aggregate: pd.DataFrame,
             data: ReportData) -> list[Block]:
    """Accuracy tables per selection rule, the cost table and the plots of one dataset × protocol."""
    here = aggregate[(aggregate["dataset"] == dataset) & (aggregate["protocol"] == protocol)]
    blocks: list[Block] = [Heading(2, f"{dataset} / {protocol}"), Heading(3, "Accuracy")]
    for selection in _ordered_selections(here["selection"]):
        blocks += _accuracy_table(here[here["selection"] == selection].dropna(axis=1, how="all"), selection)
    blocks += _paper_table(dataset, protocol, here[here["selection"] == "iid_val"])
    blocks += _cost_table(data.costs[(data.costs["dataset"] == dataset) & (data.costs["protocol"] == protocol)])
    curves = data.curves[(data.curves["dataset"] == dataset) & (data.curves["protocol"] == protocol)]
    blocks += _plots(dataset, protocol, finals, curves)
    return blocks


def _ordered_selections(selections: pd.Series) -> list[str]:
    present = set(selections)
    return [s for s in SELECTION_ORDER if s in present] + sorted(present - set(SELECTION_ORDER))


def _accuracy_table(rows: pd.DataFrame, selection: str) -> list[Block]:
    """Heading line, rule sentence and table of one selection rule."""
    splits = [s for s in _splits(rows.columns, "_acc_mean") if s != "val"]
    gaps = [s for s in splits if _present(rows, f"iid_{s}_gap_mean")]
    agreements = [s for s in splits if s != "iid" and _present(rows, f"{s}_agreement_mean")]
    worst = [s for s in splits if _present(rows, f"{s}_worst_group_acc_mean")]
    columns = (["method", "seeds"] + [_label(s) for s in splits] + [f"IID−{_label(s)} gap" for s in gaps]
               + [f"teacher agreement {_label(s)}" for s in agreements]
               + [f"worst-group {_label(s)}" for s in worst])
    cells = [
        [row["method"], str(row["n_seeds"])] + [_pm(row, f"{s}_acc") for s in splits]
        + [_pm(row, f"iid_{s}_gap") for s in gaps] + [_pm(row, f"{s}_agreement") for s in agreements]
        + [_pm(row, f"{s}_worst_group_acc") for s in worst]
        for _, row in rows.sort_values("method").iterrows()
    ]
    rule = SELECTION_RULES.get(selection, f"the rule named '{selection}'")
    mark = ORACLE_MARK if selection == "oracle" else ""
    return [Heading(4, f"Selection: {selection}{mark}"),
            Para(f"Checkpoint chosen by {rule}. Seeds: {_seed_text(rows['n_seeds'])}. {STD_NOTE}"),
            Table(columns, cells)]


def _paper_table(dataset: str, protocol: str, rows: pd.DataFrame) -> list[Block]:
    """Ours (IID-validation selection) next to the published numbers, with the difference."""
    reference = load_reference()
    pairs = reference_columns(reference, dataset)
    cells = comparison_rows(rows, reference, dataset, pairs)
    if not cells:
        return []
    sources = "; ".join(sorted(set(reference[reference["dataset"] == dataset]["source"])))
    columns = ["method", "seeds"] + [f"{_label(s)}{'' if m == 'acc' else ' ' + METRIC_LABELS.get(m, m)} {part}"
                                     for s, m in pairs for part in ("ours", "paper", "Δ")]
    note = (f"Paper: {sources}. Ours: protocol '{protocol}', selection iid_val, {STD_NOTE} "
            "Δ = ours − paper (percentage points). The paper's own setting is the 'paper' protocol; other "
            "protocols differ from it (model, epochs) and are shown for orientation only.")
    return [Heading(3, "Paper vs ours"), Para(note), Table(columns, cells)]


def _seed_text(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    return f"{low} per method" if low == high else f"{low} to {high} per method (see the seeds column)"


def _cost_table(costs: pd.DataFrame) -> list[Block]:
    """Mean cost over seeds per method."""
    rows = []
    for method, runs in costs.groupby("method", sort=True):
        devices = ", ".join(sorted({str(d) for d in runs.get("device", pd.Series(dtype=object)).dropna()})) or "–"
        rows.append([method, _number(_mean(runs, "train_seconds") / 60, 2),
                     _number(_mean(runs, "images_per_second"), 0),
                     _number(_mean(runs, "peak_memory_mb"), 0), devices])
    columns = ["method", "train minutes", "images/s", "peak memory MB", "device"]
    return [Heading(3, "Cost"), Para("Mean over seeds (all finished runs)."), Table(columns, rows)]


def _mean(frame: pd.DataFrame, column: str) -> float:
    return float(frame[column].astype(float).mean()) if column in frame else math.nan


def _failures(failed: list[dict[str, Any]]) -> list[Block]:
    if not failed:
        return []
    rows = [[run["run_id"], run["method"], run["dataset"], run["protocol"], str(run["seed"]), _one_line(run["error"])]
            for run in failed]
    return [Heading(2, "Failed runs"), Table(["run", "method", "dataset", "protocol", "seed", "error"], rows)]


def _one_line(error: str | None) -> str:
    text = " ".join((error or "no error recorded").split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


# --- plots ----------------------------------------------------------------------------------
def _plots(dataset: str, protocol: str, finals: pd.DataFrame, curves: pd.DataFrame) -> list[Block]:
    """Accuracy bars (iid_val selection) and training curves of one dataset × protocol."""
    slug = _slug(f"{dataset}_{protocol}")
    blocks: list[Block] = [Heading(3, "Plots")]
    chosen = finals[finals["selection"] == "iid_val"].dropna(axis=1, how="all")
    bar_splits = [s for s in _splits(chosen.columns) if s != "val"]
    if bar_splits:
        png = _render((8, 4), lambda fig: _draw_accuracy(fig, chosen, bar_splits))
        blocks.append(Plot(f"{dataset} / {protocol}: accuracy at iid_val selection (dots = seeds)",
                           f"accuracy_{slug}.png", png))
    curve_splits = _splits(curves.dropna(axis=1, how="all").columns)
    if curve_splits:
        png = _render((4 * len(curve_splits), 3.5), lambda fig: _draw_curves(fig, curves, curve_splits))
        blocks.append(Plot(f"{dataset} / {protocol}: accuracy per epoch (mean over seeds)",
                           f"curves_{slug}.png", png))
    return blocks if len(blocks) > 1 else []


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def _render(size: tuple[float, float], draw: Callable[[Figure], None]) -> bytes:
    """Draw on a fresh Agg figure with the default style and return PNG bytes without metadata."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=size, dpi=100)
        draw(fig)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _draw_accuracy(fig: Figure, finals: pd.DataFrame, splits: list[str]) -> None:
    """Grouped bars (mean) of each split's accuracy per method, one black dot per seed."""
    ax = fig.add_subplot()
    methods = sorted(finals["method"].unique())
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        offset = (i - (len(splits) - 1) / 2) * width
        values = [finals.loc[finals["method"] == m, f"{split}_acc"].dropna().astype(float) * 100 for m in methods]
        ax.bar([j + offset for j in range(len(methods))], [v.mean() for v in values], width,
               label=_label(split), color=f"C{i}")
        for j, seeds in enumerate(values):
            ax.scatter([j + offset] * len(seeds), seeds, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))


def _draw_curves(fig: Figure, curves: pd.DataFrame, splits: list[str]) -> None:
    """One panel per split: mean accuracy per epoch, one line per method."""
    columns = [f"{split}_acc" for split in splits]
    means = curves.groupby(["method", "epoch"], sort=True)[columns].mean() * 100
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    for ax, split in zip(axes, splits, strict=False):
        for i, method in enumerate(means.index.get_level_values("method").unique()):
            series = means.loc[method, f"{split}_acc"]
            ax.plot(series.index, series.values, marker="o", markersize=3, label=method, color=f"C{i}")
        ax.set_title(f"{_label(split)} accuracy")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()


def _remove_stale_plots(folder: Path, keep: set[str]) -> None:
    """Delete PNGs left in the plots folder by an earlier report that this one no longer has."""
    for path in sorted(folder.glob("*.png")) if folder.exists() else []:
        if path.name not in keep:
            path.unlink()


# --- rendering ------------------------------------------------------------------------------
def _markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_markdown_block(block) for block in blocks) + "\n"


def _markdown_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Para):
        return block.text
    if isinstance(block, Plot):
        return f"![{block.title}](plots/{block.name})"
    lines = [block.columns, ["---"] * len(block.columns), *block.rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def _html(blocks: list[Block]) -> str:
    body = "\n".join(_html_block(block) for block in blocks)
    style = ("body{font-family:sans-serif;max-width:75em;margin:1em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .5em}"
             "td{text-align:right}td:first-child{text-align:left}img{max-width:100%}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Benchmark report</title>\n'
            f"<style>{style}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Plot):
        data = base64.b64encode(block.png).decode("ascii")
        return f'<figure><img alt="{html.escape(block.title)}" src="data:image/png;base64,{data}"></figure>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in block.columns)
    rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"
