"""Evaluation metrics: accuracy per split, per-group and worst-group accuracy, teacher agreement, gaps.

Everything is accumulated on the device and read back once per split.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import BiasedDataset, Split, SplitRoles, to_float_images

# Images × pixels of one evaluation batch on a CPU. A batch of 512 at 64×64 px (a 537 MB activation per layer) runs
# at 160 images/s on one core, a batch of 32 at 395: measured for small_cnn at 28, 32 and 64 px, the fastest batch
# holds about 2^17 pixels. Accelerators keep the protocol's batch.
CPU_EVAL_PIXELS = 2**17


def eval_batch_size(protocol_batch: int, device: torch.device, image_shape: tuple[int, ...]) -> int:
    """The evaluation batch: the protocol's on an accelerator; on a CPU the largest power of two (16 to the
    protocol's) whose images hold at most ``CPU_EVAL_PIXELS`` pixels. Per-image outputs do not depend on it."""
    if device.type != "cpu":
        return protocol_batch
    pixels = max(1, image_shape[-1] * image_shape[-2])
    fits = max(1, CPU_EVAL_PIXELS // pixels)
    return max(16, min(protocol_batch, 1 << (fits.bit_length() - 1)))


@torch.no_grad()
def predict_split(predict: Callable[[Tensor], Tensor], split: Split, batch_size: int, view: str = "x") -> Tensor:
    """Predicted class of every image of ``split`` (on the device)."""
    images = split.view_images(view)
    preds = [predict(to_float_images(images[i:i + batch_size])).argmax(1) for i in range(0, len(split), batch_size)]
    return torch.cat(preds)


@torch.no_grad()
def predict_with_loss(predict: Callable[[Tensor], Tensor], split: Split, batch_size: int) -> tuple[Tensor, float]:
    """Predicted class of every image of ``split`` and the mean cross-entropy of ``predict``'s logits (the default
    validation objective, ``Method.val_loss``) from the same forward passes."""
    total = torch.zeros((), device=split.y.device)
    preds = []
    for i in range(0, len(split), batch_size):
        logits = predict(to_float_images(split.x[i:i + batch_size]))
        total += F.cross_entropy(logits.float(), split.y[i:i + batch_size], reduction="sum")
        preds.append(logits.argmax(1))
    return torch.cat(preds), float(total) / len(split)


def predict_splits(predict: Callable[[Tensor], Tensor], dataset: BiasedDataset, names: list[str], batch_size: int,
                   view: str = "x", known: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Predicted classes of every split in ``names``; a split in ``known`` keeps the predictions given there, and
    a split the dataset declares a subset of another (``BiasedDataset.subsets``) takes its rows of the other's
    predictions instead of predicting its images again (in eval mode each image's prediction does not depend on its
    batch)."""
    preds: dict[str, Tensor] = dict(known or {})

    def of(name: str) -> Tensor:
        if name not in preds:
            if name in dataset.subsets:
                parent, rows = dataset.subsets[name]
                preds[name] = of(parent)[rows]
            else:
                preds[name] = predict_split(predict, dataset.splits[name], batch_size, view)
        return preds[name]

    return {name: of(name) for name in names}


def split_metrics(name: str, split: Split, preds: Tensor, group_names: dict[int, str],
                  teacher_preds: Tensor | None = None) -> dict[str, float]:
    """Flat metrics ``<split>_acc``, ``<split>_group_acc/<g>``, ``<split>_worst_group_acc``, and with a
    teacher ``<split>_agreement`` and ``<split>_group_agreement/<g>`` (top-1 agreement, as e²KD reports)."""
    correct = (preds == split.y).float()
    agree = None if teacher_preds is None else (preds == teacher_preds).float()
    values: dict[str, Tensor] = {f"{name}_acc": correct.mean()}
    groups = torch.unique(split.group).tolist()
    if len(groups) > 1 or group_names:
        group_accs = []
        for g in groups:
            in_group = split.group == g
            label = group_names.get(int(g), str(g))
            values[f"{name}_group_acc/{label}"] = correct[in_group].mean()
            group_accs.append(values[f"{name}_group_acc/{label}"])
            if agree is not None:
                values[f"{name}_group_agreement/{label}"] = agree[in_group].mean()
        values[f"{name}_worst_group_acc"] = torch.stack(group_accs).min()
    if agree is not None:
        values[f"{name}_agreement"] = agree.mean()
    keys = list(values)
    numbers = torch.stack([values[k] for k in keys]).tolist()  # one host sync per split
    return dict(zip(keys, numbers, strict=True))


def conflicting_samples(split: Split, roles: SplitRoles) -> Tensor:
    """Which samples of ``split`` belong to a group the dataset declares bias-conflicting."""
    groups = torch.tensor(roles.groups_of_kind("conflicting"), dtype=split.group.dtype, device=split.group.device)
    return torch.isin(split.group, groups)


def mining_metrics(mined: Tensor | None, conflicting: Tensor) -> dict[str, float]:
    """How a method's inferred minority (``Method.mined_minority``) matches the training split's true
    bias-conflicting samples: ``mined_share`` (of the training split), ``mined_precision`` (of the mined samples,
    the share that is conflicting), ``mined_recall`` (of the conflicting samples, the share mined), and
    ``train_conflicting_share`` (what a perfect miner's share would be)."""
    if mined is None or not bool(conflicting.any()):
        return {}
    mined, conflicting = mined.bool(), conflicting.bool().to(mined.device)
    hits = (mined & conflicting).sum().float()
    values = torch.stack([mined.float().mean(), hits / mined.sum().clamp(min=1), hits / conflicting.sum(),
                          conflicting.float().mean()])
    keys = ("mined_share", "mined_precision", "mined_recall", "train_conflicting_share")
    return dict(zip(keys, values.tolist(), strict=True))


def add_gaps(metrics: dict[str, float], roles: SplitRoles) -> dict[str, float]:
    """The generalisation gaps ``<iid>_<shifted>_gap`` = IID accuracy − accuracy on each shifted split."""
    iid = roles.iid
    for other in roles.shifted:
        if iid is not None and f"{iid}_acc" in metrics and f"{other}_acc" in metrics:
            metrics[f"{iid}_{other}_gap"] = metrics[f"{iid}_acc"] - metrics[f"{other}_acc"]
    return metrics


def evaluate(predict: Callable[[Tensor], Tensor], dataset: BiasedDataset, batch_size: int,
             splits: list[str], teacher_preds: dict[str, Tensor] | None = None,
             view: str = "x", known: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Metrics of ``predict`` on ``splits`` (a model in eval mode), fed ``view`` where a split has it, else ``x``
    (a teacher trained on debiased images is measured on the debiased test images where the dataset has them);
    ``known``: predictions already made (``predict_splits``)."""
    metrics: dict[str, float] = {}
    for name, preds in predict_splits(predict, dataset, splits, batch_size, view, known).items():
        metrics.update(split_metrics(name, dataset.splits[name], preds, dataset.group_names,
                                     None if teacher_preds is None else teacher_preds.get(name)))
    return add_gaps(metrics, dataset.roles)
