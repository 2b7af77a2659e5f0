"""Report plots (matplotlib, Agg, default style, PNG without a Software tag so that bytes are reproducible):
accuracy bars with seed dots, training curves, metric vs bias strength, accuracy vs cost, and the
explanation gallery of a dataset (the same test images, the teacher's heatmap and each method's)."""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

matplotlib.use("Agg")

CMAP = "bwr"


def render(size: tuple[float, float], draw: Callable[[Figure], None], dpi: int = 100) -> bytes:
    """Draw on a fresh figure with the default style and return PNG bytes without metadata."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=size, dpi=dpi)
        draw(fig)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def draw_accuracy(fig: Figure, finals: pd.DataFrame, splits: list[str], labels: dict[str, str]) -> None:
    """Grouped bars (mean) of each split's accuracy per method, one black dot per seed."""
    ax = fig.add_subplot()
    methods = sorted(finals["method_label"].unique())
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        offset = (i - (len(splits) - 1) / 2) * width
        values = [finals.loc[finals["method_label"] == m, f"{split}_acc"].dropna().astype(float) * 100
                  for m in methods]
        ax.bar([j + offset for j in range(len(methods))], [v.mean() if len(v) else 0 for v in values], width,
               label=labels.get(split, split), color=f"C{i}")
        for j, seeds in enumerate(values):
            ax.scatter([j + offset] * len(seeds), seeds, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))


def draw_curves(fig: Figure, curves: pd.DataFrame, splits: list[str], labels: dict[str, str]) -> None:
    """One panel per split: mean accuracy per epoch, one line per method."""
    columns = [f"{split}_acc" for split in splits]
    means = curves.groupby(["method_label", "epoch"], sort=True)[columns].mean() * 100
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    for ax, split in zip(axes, splits, strict=False):
        for i, method in enumerate(means.index.get_level_values("method_label").unique()):
            series = means.loc[method, f"{split}_acc"]
            ax.plot(series.index, series.values, marker="o", markersize=3, label=method, color=f"C{i % 10}")
        ax.set_title(f"{labels.get(split, split)} accuracy")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=7)


def draw_strength(fig: Figure, frame: pd.DataFrame, parameter: str, metrics: list[str],
                  labels: dict[str, str], paper: pd.DataFrame | None = None) -> None:
    """One panel per metric: mean (± std over seeds) against the dataset parameter, one line per method.
    ``frame``: one row per run with ``method``, ``value`` (the parameter) and the metric columns (fractions).
    ``paper``: published values (``method``, ``value``, ``metric``, ``paper`` in percent), drawn dashed."""
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=False):
        for i, (method, rows) in enumerate(frame.groupby("method", sort=True)):
            stats = rows.groupby("value")[metric].agg(["mean", "std"]).sort_index() * 100
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", markersize=4,
                        capsize=3, label=method, color=f"C{i % 10}")
            published = pd.DataFrame() if paper is None else paper[(paper["method"] == method)
                                                                    & (paper["metric"] == metric)]
            if not published.empty:
                published = published.sort_values("value")
                ax.plot(published["value"], published["paper"], linestyle="--", marker="x", color=f"C{i % 10}",
                        label=f"{method} (paper)")
        ax.set_title(labels.get(metric, metric))
        ax.set_xlabel(parameter)
        if frame["value"].min() > 0 and frame["value"].max() / frame["value"].min() >= 8:
            ax.set_xscale("log")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=7)


def draw_cost(fig: Figure, points: pd.DataFrame, metric_label: str) -> None:
    """Accuracy against training minutes per method (mean over seeds), labelled points."""
    ax = fig.add_subplot()
    for i, row in enumerate(points.itertuples()):
        ax.scatter(row.minutes, row.accuracy, color=f"C{i % 10}", s=30, zorder=3)
        ax.annotate(str(row.method), (row.minutes, row.accuracy), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    if len(points) and points["minutes"].min() > 0 and points["minutes"].max() / points["minutes"].min() >= 8:
        ax.set_xscale("log")
    ax.set_xlabel("training time (minutes, mean over seeds)")
    ax.set_ylabel(f"{metric_label} (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)


@dataclass(frozen=True)
class GalleryColumn:
    """One heatmap column of a dataset gallery."""

    title: str
    maps: np.ndarray  # N×H×W


def draw_gallery(fig: Figure, images: np.ndarray, row_labels: list[str], columns: list[GalleryColumn]) -> None:
    """Rows = test images (N×C×H×W uint8); columns = input, then one heatmap per column (red > 0, blue < 0,
    each map scaled to its own max |value|)."""
    n_rows, n_cols = len(images), len(columns) + 1
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i in range(n_rows):
        image = images[i]
        ax = axes[i][0]
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
        ax.set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center", labelpad=4)
        for j, column in enumerate(columns):
            values = column.maps[i].astype(np.float32)
            vmax = float(np.abs(values).max()) or 1.0
            axes[i][j + 1].imshow(values, cmap=CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set_title("input", fontsize=8)
    for j, column in enumerate(columns):
        axes[0][j + 1].set_title(column.title, fontsize=7)


def gallery_size(n_rows: int, n_columns: int) -> tuple[float, float]:
    return 1.6 + 1.3 * (n_columns + 1), 0.4 + 1.3 * n_rows

