"""What the mask terms of the mask-guided methods did during training, generated from their runs' epoch logs.

A mask-guided method (RRR, GAIN, ISNet, GALS) adds terms to the cross-entropy that push its explanation off
the irrelevant region. When such a method barely beats ERM, or its random-mask control matches it, these
numbers say where the push went: a term that vanished (GALS penalises ∂CE/∂x, which shrinks as the shortcut
fits the training set), or a term that training satisfied only with batch statistics, so that the network
evaluated at inference (running statistics) does not satisfy it. The runner logs every loss term as the mean
over the epoch's training steps (train mode: batch norms use the batch's statistics) and ``val_loss``, the
same objective on the biased validation split in inference mode (running statistics); both splits are drawn
from the same distribution, so a large ratio between them is the train/inference mode, not overfitting (the
ERM-like rows, ISNet and GALS, are the control).
"""
from __future__ import annotations

import math
from typing import Any

from reports.blocks import Block, Heading, Para, Table
from reports.variants import display_names

SHORTCUT = "iid_shortcut_relevance"


def is_guided(run: dict[str, Any]) -> bool:
    return "mask_control" in ((run.get("config") or {}).get("hparams") or {})


def mask_terms(epoch: dict[str, Any]) -> float:
    """The weighted sum of the non-CE terms in the training objective at ``epoch`` (train_loss − train_ce)."""
    if "train_loss" not in epoch or "train_ce" not in epoch:
        return math.nan
    return float(epoch["train_loss"]) - float(epoch["train_ce"])


def _mean(vals: list[float]) -> float:
    vals = [v for v in vals if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _cell(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.4g}"


def _first_with_terms(run: dict[str, Any]) -> dict[str, Any]:
    """The first epoch whose objective has mask terms (ISNet trains its first epochs on CE alone)."""
    return next((e for e in run["epochs"] if mask_terms(e) > 0), {})


def mask_term_blocks(records: list[dict[str, Any]]) -> list[Block]:
    """One row per mask-guided configuration (mean over its seeds), ERM first as the reference for the
    shortcut relevance."""
    names = display_names(records)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in sorted(records, key=lambda r: (names[r["run_id"]][1], r["protocol"], names[r["run_id"]][0])):
        if (is_guided(run) or run["method"] == "erm") and run.get("epochs"):
            groups.setdefault((names[run["run_id"]][1], run["protocol"], names[run["run_id"]][0]), []).append(run)
    if not any(is_guided(runs[0]) for runs in groups.values()):
        return []
    body = []
    for (dataset, protocol, label), runs in sorted(groups.items(), key=lambda kv: (kv[0][:2], is_guided(kv[1][0]),
                                                                                    kv[0][2])):
        last = [run["epochs"][-1] for run in runs]
        train = _mean([float(e.get("train_loss", math.nan)) for e in last])
        inference = _mean([float(e.get("val_loss", math.nan)) for e in last])
        guided = is_guided(runs[0])
        body.append([
            dataset, protocol, label, str(len(runs)),
            _cell(_mean([float(e.get("train_ce", math.nan)) for e in last])) if guided else "–",
            _cell(_mean([mask_terms(_first_with_terms(run)) for run in runs])) if guided else "–",
            _cell(_mean([mask_terms(e) for e in last])) if guided else "–",
            _cell(train), _cell(inference),
            _cell(inference / train) if guided and train > 0 else "–",
            _cell(_mean([100 * float(e.get(SHORTCUT, math.nan)) for e in last])),
        ])
    return [Heading(2, "What the mask terms did (measured)"), Para(
        "For each mask-guided configuration (and ERM for reference), mean over its seeds: the training "
        "objective's cross-entropy and its mask terms (weighted, the objective minus CE) at the first epoch that "
        "has them and at the last epoch, each the mean over that epoch's training steps with batch norms in "
        "train mode (batch statistics); the same total objective at the last epoch on the biased validation "
        "split in inference mode (running statistics), and their ratio; and the share of the network's positive "
        "LRP-ε relevance (true class) that falls on the shortcut region of the IID (biased) test probe images at "
        "the last epoch (percent). "
        "Training and validation images are drawn from the same distribution: a ratio far above 1 means the "
        "objective was met only through the batch statistics of training, not by the network that is "
        "evaluated; a mask term near zero means the method stopped pushing."),
        Table(["dataset", "protocol", "method", "seeds", "CE (train mode, last epoch)",
               "mask terms (train mode, first epoch with them)", "mask terms (train mode, last epoch)",
               "objective (train mode, last epoch)", "objective (inference mode, validation, last epoch)",
               "inference / train", "shortcut relevance (%, IID test, last epoch)"], body, "mask-terms")]
