"""Neuron differentiation's masks against the paper's Fig. 4, generated from the runs' epoch metrics.

Fig. 4 of the neuron-differentiation paper (CMNIST, ratio 0.5 %) is described in its text, not tabulated: the
IoU of every layer falls as training goes on; deeper conv layers end with a lower IoU and keep fewer weights;
the linear layer keeps a large share and a large IoU. Each run's per-layer curves (``nd_iou_<layer>``,
``nd_keep_a_<layer>``, ``nd_keep_b_<layer>``, recorded by the method's ``epoch_metrics``) are tabulated here
and every one of those statements is checked on them, along with how gradual the decline is.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from bench.models import create_model
from reports.blocks import Block, Heading, Para, Table

IOU = "nd_iou_"


def mask_epochs(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's epochs of the differentiation loop in which the masks were trained (a fine-tuning epoch
    leaves the masks as they were, so its row repeats the previous one and is skipped)."""
    rows = [e for e in run.get("epochs") or [] if any(k.startswith(IOU) for k in e)]
    return [e for e in rows if not e.get("selectable", False)]


def layer_layout(model: str, recorded: list[str]) -> dict[str, str]:
    """The recorded masked layers in the model's depth order, each ``conv`` or ``linear``. Stored records sort
    their keys (``fc`` before ``features_0``), so the order and kinds come from the model the run names."""
    out = {}
    for name, module in create_model(model, num_classes=2, in_channels=3).named_modules():
        layer = name.replace(".", "_")
        if layer in recorded:
            out[layer] = ("conv" if isinstance(module, nn.Conv2d) else
                          "linear" if isinstance(module, nn.Linear) else "other")
    return out


def _falling(values: list[float]) -> bool:
    return all(a > b for a, b in zip(values, values[1:], strict=False))


def checks(rows: list[dict[str, Any]], kinds: dict[str, str]) -> list[tuple[str, bool, str]]:
    """(the paper's statement, whether this run shows it, the measured values)."""
    first, last = rows[0], rows[-1]
    layers = list(kinds)
    features = [layer for layer in layers if kinds[layer] == "conv"]
    linear = [layer for layer in layers if kinds[layer] == "linear"]
    keep = {layer: (last[f"nd_keep_a_{layer}"] + last[f"nd_keep_b_{layer}"]) / 2 for layer in layers}
    out = [("the IoU of every layer falls during training",
            all(last[IOU + layer] < first[IOU + layer] for layer in layers),
            ", ".join(f"{layer} {first[IOU + layer]:.3f} → {last[IOU + layer]:.3f}" for layer in layers)),
           ("deeper conv layers end with a lower IoU", _falling([last[IOU + f] for f in features]),
            ", ".join(f"{f} {last[IOU + f]:.3f}" for f in features)),
           ("deeper conv layers keep fewer weights (mean of A and B)", _falling([keep[f] for f in features]),
            ", ".join(f"{f} {keep[f]:.3f}" for f in features))]
    if linear and features:
        out.append(("the linear layer keeps more weights and a higher IoU than the conv layers",
                    all(keep[lin] > max(keep[f] for f in features)
                        and last[IOU + lin] > max(last[IOU + f] for f in features) for lin in linear),
                    ", ".join(f"{lin}: keep {keep[lin]:.3f}, IoU {last[IOU + lin]:.3f}" for lin in linear)))
    return out


def decline_share(rows: list[dict[str, Any]], layer: str, epochs: int) -> float:
    """Share of the layer's IoU decline over the loop (from 1, the masks' start) reached after ``epochs`` mask
    epochs: near 1 means the masks separated at once, not gradually."""
    total = 1.0 - rows[-1][IOU + layer]
    return (1.0 - rows[min(epochs, len(rows)) - 1][IOU + layer]) / total if total > 0 else float("nan")


def differentiation_blocks(records: list[dict[str, Any]]) -> list[Block]:
    """The per-layer mask table and the Fig. 4 checks of every neuron-differentiation run in ``records``."""
    runs = sorted((r for r in records if r["method"] == "neuron_diff" and mask_epochs(r)),
                  key=lambda r: (sorted(r["config"]["dataset_params"].items()), r["seed"]))
    if not runs:
        return []
    out: list[Block] = [Heading(2, "Mask differentiation against the paper's Fig. 4"), Para(
        "Per masked layer, from each run's epoch metrics: the binarised masks' IoU at the end of every mask "
        "epoch of the loop (fine-tuning epochs leave the masks unchanged and are not repeated), the weights each "
        "sub-model keeps at the end, and the share of the layer's whole IoU decline reached after the first two "
        "mask epochs (1.00: the masks separated at once; the paper's curves fall over the whole training).")]
    body, verdicts = [], []
    varying = sorted({k for r in runs for k, v in r["config"]["dataset_params"].items()
                      if any(o["config"]["dataset_params"].get(k) != v for o in runs)})
    for run in runs:
        rows = mask_epochs(run)
        kinds = layer_layout(run["model"], [key.removeprefix(IOU) for key in rows[0] if key.startswith(IOU)])
        params = ", ".join(f"{k} {run['config']['dataset_params'][k]}" for k in varying)
        label = f"{run['dataset']}{f' ({params})' if params else ''}, seed {run['seed']}"
        for layer, kind in kinds.items():
            body.append([label, layer, kind, " → ".join(f"{r[IOU + layer]:.3f}" for r in rows),
                         f"{rows[-1][f'nd_keep_a_{layer}']:.3f}", f"{rows[-1][f'nd_keep_b_{layer}']:.3f}",
                         f"{decline_share(rows, layer, 2):.2f}"])
        for statement, holds, measured in checks(rows, kinds):
            verdicts.append([label, statement, "yes" if holds else "no", measured])
    out.append(Table(["run", "layer", "kind", "IoU per mask epoch", "kept by A", "kept by B",
                      "decline after 2 mask epochs"], body, "nd-masks"))
    out.append(Para("The paper's statements about Fig. 4, checked on the same runs:"))
    out.append(Table(["run", "the paper says", "here", "measured (final values)"], verdicts, "nd-fig4-checks"))
    return out
