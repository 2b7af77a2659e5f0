"""Explanation gallery: one PNG per run with heatmaps of fixed test images.

Every run of a dataset gets the same images (the first bias-aligned ones of the ``iid`` split and the
first bias-conflicting ones of the ``shift`` split), so galleries of different runs can be compared
side by side. Each heatmap explains the true label and uses its own symmetric colour scale (red > 0,
blue < 0). The PNG is deterministic: the same store gives the same bytes.
"""
from __future__ import annotations

import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from bench.atomic import atomic_write_bytes
from bench.data import BiasedDataset, load_dataset, to_float_images
from bench.errors import UserError
from bench.explain import explain, list_explainers
from bench.explain.cam import upsample
from bench.explain_eval import Row
from bench.explain_eval import pick_rows as fixed_rows
from bench.models import create_model
from bench.runner import load_checkpoint
from bench.runs import RunConfig
from bench.store import Store

DEFAULT_METHODS = ("lrp", "gradinput", "inputgrad", "gradcam")
FEATURE_METHODS = ("gradcam", "attention")  # B×1×h×w maps at a feature layer, upsampled for display
LRP_METHODS = ("lrp", "lrp_flex")
CMAP = "bwr"

# Figure geometry in inches at DPI, chosen so that every size is a whole number of pixels.
DPI = 100
CELL = 1.5   # one image or heatmap
LEFT = 1.4   # row labels
TOP = 1.2    # figure title (3 lines) and column titles (2 lines)
TITLE_Y = 0.08  # figure title's distance from the top edge
BOTTOM = 0.1
RIGHT = 0.1


@dataclass(frozen=True)
class Column:
    """One heatmap column: which model, which explanation method."""

    model: str  # "student" (the run's model) or "teacher"
    title: str
    method: str


def write_gallery(results_dir: Path, run_id: str, methods: list[str] | None = None, n_per_group: int = 4,
                  eps: float = 0.01, out: Path | None = None) -> Path:
    """Write the explanation gallery of ``run_id`` as a PNG and return its path.

    ``methods`` explain the run's model (default: lrp, gradinput, inputgrad, gradcam); a teacher, when
    the run has one, is explained with the first of them. ``eps``: the LRP stabiliser.
    """
    methods = check_methods(methods)
    if n_per_group < 1:
        raise UserError(f"the number of images per group must be >= 1, got {n_per_group}")
    store = Store(results_dir, create=False)
    config = finished_config(store, run_id)
    models = {"student": load_model(store, run_id, config["model"])}
    if config.get("teacher"):
        teacher = RunConfig.from_dict(config["teacher"])
        models["teacher"] = load_model(store, teacher.run_id, teacher.model, teacher=True)
    store.close()
    dataset = load_dataset(config["dataset"], config["dataset_params"], config["seed"], "cpu")
    rows = pick_rows(dataset, n_per_group)
    columns = make_columns(config["method"], methods, "teacher" in models)
    png = render(run_id, dataset, rows, columns, models, eps)
    path = Path(out) if out is not None else Path(results_dir) / "report" / "gallery" / f"{run_id}.png"
    atomic_write_bytes(path, png)
    return path


def check_methods(methods: list[str] | None) -> list[str]:
    """The explanation methods to draw (default set when None); unknown or no names → UserError."""
    chosen = list(DEFAULT_METHODS if methods is None else methods)
    known = list_explainers()
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise UserError(f"unknown explanation method {unknown[0]!r}; choose from {', '.join(known)}")
    if not chosen:
        raise UserError(f"name at least one explanation method ({', '.join(known)})")
    return list(dict.fromkeys(chosen))


def finished_config(store: Store, run_id: str) -> dict[str, Any]:
    """The config of a finished run in ``store`` (unknown or unfinished run → UserError)."""
    record = store.get(run_id)
    if record is None:
        ids = [run["run_id"] for run in store.runs()]
        close = difflib.get_close_matches(run_id, ids, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown run id {run_id!r} in {store.path}; {hint}run ids are the folder names "
                        f"under {store.folder / 'runs'} (run `python run_bench.py report` for the report)")
    if record["status"] != "finished":
        raise UserError(f"run {run_id} is {record['status']}, not finished; finish it first "
                        "(re-run its command or sweep)")
    return record["config"]


def load_model(store: Store, run_id: str, name: str, teacher: bool = False) -> nn.Module:
    """The model of ``run_id`` rebuilt from its ``best.pt``, in eval mode on the CPU."""
    path = store.run_dir(run_id) / "best.pt"
    state = load_checkpoint(path, torch.device("cpu"))
    if state is None:
        whose = "teacher run" if teacher else "run"
        raise UserError(f"{whose} {run_id} has no readable checkpoint {path}; re-run it to write one")
    model = create_model(name, state["num_classes"], state["in_channels"])
    model.load_state_dict(state["model"])
    return model.eval()


def pick_rows(dataset: BiasedDataset, n: int) -> list[Row]:
    """The gallery's fixed images (see ``bench.explain_eval.pick_rows``); none → UserError."""
    rows = fixed_rows(dataset, n)
    if not rows:
        raise UserError(f"dataset {dataset.name} has no test images to show")
    return rows


def make_columns(run_method: str, methods: list[str], has_teacher: bool) -> list[Column]:
    """One column per (model, method): the run's model with every method, then the teacher with the first."""
    columns = [Column("student", run_method, m) for m in methods]
    if has_teacher:
        columns.append(Column("teacher", "teacher", methods[0]))
    return columns


def grid_pixels(n_rows: int, n_heatmaps: int) -> tuple[int, int]:
    """(width, height) in pixels of a gallery with ``n_rows`` images and ``n_heatmaps`` heatmap columns."""
    width, height = figure_inches(n_rows, n_heatmaps + 1)
    return round(width * DPI), round(height * DPI)


def figure_inches(n_rows: int, n_cols: int) -> tuple[float, float]:
    return LEFT + n_cols * CELL + RIGHT, TOP + n_rows * CELL + BOTTOM


# --- computing ----------------------------------------------------------------------------------
def gather_images(dataset: BiasedDataset, rows: list[Row]) -> tuple[Tensor, Tensor]:
    """The rows' images (float, N×C×H×W in [0, 1]) and true labels."""
    x = torch.stack([to_float_images(dataset.splits[r.split].x[r.index]) for r in rows])
    y = torch.stack([dataset.splits[r.split].y[r.index] for r in rows])
    return x, y


def heatmap(model: nn.Module, x: Tensor, y: Tensor, method: str, eps: float) -> Tensor:
    """An N×H×W display map: input-level maps summed over channels, feature maps upsampled to the input."""
    kwargs: dict[str, Any] = {"eps": eps} if method in LRP_METHODS else {}
    maps = explain(model, x, y, method, **kwargs)
    if method in FEATURE_METHODS:
        maps = upsample(maps, like=x)
    return maps.sum(dim=1)


def predictions(models: dict[str, nn.Module], x: Tensor) -> dict[str, list[int]]:
    with torch.no_grad():
        return {name: model(x).argmax(dim=1).tolist() for name, model in models.items()}


# --- drawing ------------------------------------------------------------------------------------
def render(run_id: str, dataset: BiasedDataset, rows: list[Row], columns: list[Column],
           models: dict[str, nn.Module], eps: float) -> bytes:
    """The gallery as PNG bytes (no metadata that changes between calls)."""
    x, y = gather_images(dataset, rows)
    maps = [heatmap(models[c.model], x, y, c.method, eps) for c in columns]
    preds = predictions(models, x)
    labels = [row_label(dataset, row, int(y[i]), {k: v[i] for k, v in preds.items()})
              for i, row in enumerate(rows)]
    with matplotlib.style.context("default"):
        fig = Figure(figsize=figure_inches(len(rows), len(columns) + 1), dpi=DPI)
        axes = layout(fig, len(rows), len(columns) + 1)
        for i in range(len(rows)):
            draw_input(axes[i][0], x[i], labels[i])
            for j in range(len(columns)):
                draw_heatmap(axes[i][j + 1], maps[j][i])
        for j, column in enumerate(columns):
            axes[0][j + 1].set_title(f"{column.title}\n{column.method}", fontsize=9)
        axes[0][0].set_title("input", fontsize=9)
        fig.suptitle(figure_title(run_id, dataset, rows), fontsize=9, va="top",
                     y=1 - TITLE_Y / figure_inches(len(rows), len(columns) + 1)[1])
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def layout(fig: Figure, n_rows: int, n_cols: int) -> list[list[Axes]]:
    """An n_rows × n_cols grid of square cells with fixed margins (so the pixel size is predictable)."""
    width, height = figure_inches(n_rows, n_cols)
    grid = fig.add_gridspec(n_rows, n_cols, left=LEFT / width, right=1 - RIGHT / width,
                            bottom=BOTTOM / height, top=1 - TOP / height, wspace=0.08, hspace=0.08)
    return [[fig.add_subplot(grid[i, j]) for j in range(n_cols)] for i in range(n_rows)]


def row_label(dataset: BiasedDataset, row: Row, label: int, preds: dict[str, int]) -> str:
    names = dataset.class_names
    group = dataset.group_names.get(row.group, f"group {row.group}")
    text = f"label {names[label]}\npred {names[preds['student']]}"
    if "teacher" in preds:
        text += f" (T {names[preds['teacher']]})"
    return f"{text}\n{group}\n{row.split} #{row.index}"


def figure_title(run_id: str, dataset: BiasedDataset, rows: list[Row]) -> str:
    """The run, where each block of rows comes from, and how to read the colours."""
    blocks: list[str] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or (rows[i].split, rows[i].group) != (rows[start].split, rows[start].group):
            group = dataset.group_names.get(rows[start].group, f"group {rows[start].group}")
            blocks.append(f"rows {start + 1}-{i}: {group}, {rows[start].split} split")
            start = i
    return (f"{run_id}\n" + "; ".join(blocks)
            + "\nexplaining the true label; red > 0, blue < 0, each map scaled to its own max |value|")


def draw_input(ax: Axes, image: Tensor, label: str) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    bare(ax)
    ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center", labelpad=4)


def draw_heatmap(ax: Axes, values: Tensor) -> None:
    """A signed map on a diverging colour map, symmetric around 0."""
    vmax = float(values.abs().max())
    ax.imshow(values.numpy(), cmap=CMAP, vmin=-(vmax or 1.0), vmax=vmax or 1.0, interpolation="nearest")
    if vmax == 0:  # e.g. Grad-CAM's ReLU removed everything: say so rather than show a blank square
        ax.text(0.5, 0.5, "all 0", transform=ax.transAxes, ha="center", va="center", fontsize=8, color="gray")
    bare(ax)


def bare(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
