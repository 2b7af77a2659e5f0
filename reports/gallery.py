"""Explanation galleries, rendered: one PNG grid of fixed test images and their heatmaps.

The heatmaps are computed by the engine (``bench.heatmaps``: the runner saves each run's gallery with its kept
checkpoint, ``explain_run`` computes one for the ``explain`` command); this module only draws gallery records,
with one renderer for the report's per-dataset galleries and the ``explain`` command's per-run ones. Each
heatmap explains the true label and uses its own symmetric colour scale (red > 0, blue < 0). The PNG is
deterministic: the same record gives the same bytes.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import atomic_write_bytes
from bench.errors import UserError
from bench.store import Store
from reports import plots

DEFAULT_METHODS = ("lrp", "gradinput", "inputgrad", "gradcam")
DPI = 80


def grid_pixels(n_rows: int, n_heatmaps: int) -> tuple[int, int]:
    """(width, height) in pixels of a gallery with ``n_rows`` images and ``n_heatmaps`` heatmap columns."""
    width, height = plots.gallery_size(n_rows, n_heatmaps)
    return round(width * DPI), round(height * DPI)


def row_labels(record: dict[str, Any]) -> list[str]:
    """Where each image comes from, its label, what kind of group it is in, and (on a run's own gallery) the
    predictions of the run's model and of its teacher."""
    columns = list(record["columns"])
    labels = []
    for i in range(len(record["images"])):
        text = f"{record['splits'][i]} #{int(record['indices'][i])}\nlabel {int(record['labels'][i])}"
        if "student" in columns:
            text += f", pred {int(record['preds'][columns.index('student')][i])}"
            if "teacher" in columns:
                text += f" (T {int(record['preds'][columns.index('teacher')][i])})"
        labels.append(f"{text}\n{record['kinds'][i] or 'group ' + str(int(record['groups'][i]))}")
    return labels


def render_gallery(record: dict[str, Any], titles: list[str] | None = None) -> bytes:
    """A gallery record as PNG bytes; ``titles``: one per heatmap column (default: model and explainer)."""
    names = titles or [f"{m}\n{e}" for m, e in zip(record["columns"], record["explainers"], strict=True)]
    columns = [plots.GalleryColumn(title, np.asarray(maps, dtype=np.float32))
               for title, maps in zip(names, record["maps"], strict=True)]
    images = np.asarray(record["images"])
    return plots.render(plots.gallery_size(len(images), len(columns)),
                        lambda fig: plots.draw_gallery(fig, images, row_labels(record), columns), dpi=DPI)


def check_methods(methods: list[str] | None, known: list[str]) -> list[str]:
    """The explainers to draw (default set when None); unknown or no names → UserError."""
    chosen = list(DEFAULT_METHODS if methods is None else methods)
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise UserError(f"unknown explanation method {unknown[0]!r}; choose from {', '.join(known)}")
    if not chosen:
        raise UserError(f"name at least one explanation method ({', '.join(known)})")
    return list(dict.fromkeys(chosen))


def write_gallery(results_dir: Path, run_id: str, methods: list[str] | None = None, n_per_group: int = 4,
                  out: Path | None = None) -> Path:
    """Compute (engine) and draw the explanation gallery of ``run_id``; returns the PNG's path."""
    from bench.explain import list_explainers
    from bench.heatmaps import explain_run

    methods = check_methods(methods, list_explainers())
    if n_per_group < 1:
        raise UserError(f"the number of images per group must be >= 1, got {n_per_group}")
    store = Store(results_dir, create=False)
    try:
        check_known(store, run_id)
        record = explain_run(store, run_id, methods, n_per_group)
    finally:
        store.close()
    path = Path(out) if out is not None else Path(results_dir) / "report" / "gallery" / f"{run_id}.png"
    atomic_write_bytes(path, render_gallery(record))
    return path


def check_known(store: Store, run_id: str) -> None:
    """An unknown run id is a UserError with the closest known one."""
    if store.get(run_id) is not None:
        return
    close = difflib.get_close_matches(run_id, [run["run_id"] for run in store.runs()], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UserError(f"unknown run id {run_id!r} in {store.path}; {hint}run ids are the folder names "
                    f"under {store.folder / 'runs'} (run `python run_bench.py report` for the report)")
