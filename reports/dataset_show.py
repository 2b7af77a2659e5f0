"""Pictures and cards of dataset families (``run_bench.py datasets show|card NAME``)."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor

from bench.atomic import atomic_write_bytes, atomic_write_text
from bench.data import BiasedDataset, Split


def pick_examples(split: Split, n: int) -> Tensor:
    """Up to ``n`` indices, the same number from each group present where possible (first ones of each)."""
    groups = torch.unique(split.group).tolist()
    per_group = max(1, n // max(len(groups), 1))
    chosen = [(split.group == g).nonzero().flatten()[:per_group] for g in groups]
    picked = torch.cat(chosen)
    if len(picked) < n:  # top up from the start of the split
        rest = torch.arange(len(split), device=split.y.device)
        picked = torch.cat([picked, rest[~torch.isin(rest, picked)][: n - len(picked)]])
    return picked[:n]


def card_text(dataset: BiasedDataset) -> str:
    """The dataset card with the measured counts per split and group."""
    lines = [f"# {dataset.name}", "", dataset.card, "", "| split | images | " +
             " | ".join(dataset.group_names.values()) + " | description |",
             "|---|---|" + "---|" * len(dataset.group_names) + "---|"]
    for name, split in dataset.splits.items():
        counts = [str(int((split.group == g).sum())) for g in dataset.group_names]
        lines.append(f"| {name} | {len(split)} | " + " | ".join(counts) + f" | {dataset.split_descriptions[name]} |")
    channels, height, width = dataset.image_shape
    lines += ["", f"{dataset.num_classes} classes ({', '.join(dataset.class_names)}); images {channels}×{height}×"
              f"{width} uint8; bias: {dataset.bias_kind}, strength {dataset.bias_strength:g}; "
              f"teacher view: {dataset.teacher_view}."]
    return "\n".join(lines) + "\n"


def _rows(dataset: BiasedDataset, n: int) -> list[tuple[str, Tensor, list[str]]]:
    """(row label, N×H×W×3 float images, captions) for every split, plus mask and debiased rows."""
    rows = []
    for name, split in dataset.splits.items():
        index = pick_examples(split, n)
        images = split.x[index].float().div(255).permute(0, 2, 3, 1).cpu()
        captions = [f"y={dataset.class_names[int(y)]} b={int(b)}\n{dataset.group_names.get(int(g), g)}"
                    for y, b, g in zip(split.y[index], split.bias[index], split.group[index], strict=True)]
        rows.append((name, images, captions))
        if split.mask is not None:
            mask = split.mask[index].float().permute(0, 2, 3, 1).cpu()
            tint = torch.tensor([1.0, 0.1, 0.1])
            rows.append((f"{name}: mask", 0.45 * images + 0.55 * mask * tint, ["mask in red"] * len(index)))
        if split.x_debiased is not None:
            debiased = split.x_debiased[index].float().div(255).permute(0, 2, 3, 1).cpu()
            rows.append((f"{name}: x_debiased", debiased, ["teacher view"] * len(index)))
    return rows


def write_dataset_picture(dataset: BiasedDataset, path: Path, n: int = 8) -> Path:
    """A PNG grid: one row per split (and per mask / debiased view), ``n`` images per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(dataset, n)
    columns = max(len(images) for _, images, _ in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.35 * columns + 1.2, 1.55 * len(rows)), squeeze=False)
    for r, (label, images, captions) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c].clamp(0, 1).numpy(), interpolation="nearest")
                ax.set_title(captions[c], fontsize=6)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{dataset.name}: {dataset.bias_kind} (strength {dataset.bias_strength:g})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / len(rows)))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(path.with_suffix(".md"), card_text(dataset))
    return path
