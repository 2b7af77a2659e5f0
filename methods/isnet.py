"""ISNet as in Faster ISNet (Bassi, Dertkigil & Cavalli, "Improving deep neural network generalization and
robustness to background bias via layer-wise relevance propagation optimization", Nature Communications 2024;
Bassi, Decherchi & Cavalli, "Faster ISNet for Background Bias Mitigation on Deep Neural Networks", IEEE Access
2024): LRP-Flex heatmaps are trained to keep their relevance off the background. One of the mask-guided
baselines of Table 1 of Bassi et al. (2024)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.data import Batch
from bench.explain import explain, explain_with_logits
from bench.method import register_method
from methods._guided import GuidedHparams, MaskGuided
from methods.explanation_distill import explained_classes

LOGIT_MODES = ("all", "stochastic")


@dataclass
class ISNetHparams(GuidedHparams):
    """The authors' MNIST script (spec §4, ``RunISNetFlex.py``): SGD lr 1e-2, momentum 0.9, clip 1, batch 128,
    100 epochs, P = 0.7, GWRP decay d = 0.9, E = 1, A = B = 1, LRP-Flex ε = 0.01. ``logits="all"`` explains every
    class (the original ISNet, K relevance passes a step); ``"stochastic"`` one logit per sample (the top class
    half of the time, else another, uniformly: Faster ISNet's stochastic variant). The foreground cut-offs C1
    and C2 come from ``calibration_epochs`` of plain cross-entropy training, as the authors tune them: C1 = the
    mean total absolute relevance of the calibrated network's maps on the first ``calibration_samples`` training
    images, C2 = ``cut_ratio`` · C1 (the MNIST script's C1 = 1, C2 = 25 have that ratio); ``cut1 > 0`` sets them
    by hand instead (no calibration)."""

    epochs: int = 100
    lr: float = 1e-2
    momentum: float = 0.9
    heat_weight: float = 0.7  # P
    gwrp_decay: float = 0.9  # d: 0 = max, 1 = mean
    activation_e: float = 1.0  # E of b/(b + E)
    background_weight: float = 1.0  # A
    foreground_weight: float = 1.0  # B
    lrp_eps: float = 0.01
    logits: str = "all"
    calibration_epochs: int = 2
    calibration_samples: int = 2048
    cut_ratio: float = 25.0
    cut1: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.heat_weight <= 1 or not 0 <= self.gwrp_decay <= 1:
            raise ValueError("need 0 <= heat_weight <= 1 and 0 <= gwrp_decay <= 1")
        if self.logits not in LOGIT_MODES:
            raise ValueError(f"logits must be one of {', '.join(LOGIT_MODES)}, got {self.logits!r}")
        if self.activation_e <= 0 or self.lrp_eps <= 0 or self.cut_ratio < 1 or self.cut1 < 0:
            raise ValueError("need activation_e > 0, lrp_eps > 0, cut_ratio >= 1 and cut1 >= 0")
        if self.cut1 == 0 and not 0 < self.calibration_epochs < self.epochs:
            raise ValueError("without cut1, calibration_epochs must be at least 1 and fewer than epochs")
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be >= 1")


def gwrp(values: Tensor, decay: float) -> Tensor:
    """Global weighted rank pooling over the last dimension: the values sorted in descending order, the i-th
    weighted d^i, normalised by Σ d^i (d = 0: the maximum; d = 1: the mean)."""
    ranked = values.sort(dim=-1, descending=True).values
    weights = torch.pow(torch.full((values.shape[-1],), decay, dtype=values.dtype, device=values.device),
                        torch.arange(values.shape[-1], device=values.device, dtype=values.dtype))
    weights[0] = 1.0  # d^0 = 1, also for d = 0
    return (ranked * weights).sum(-1) / weights.sum()


def background_loss(heatmaps: Tensor, foreground: Tensor, decay: float, e: float, eps: float = 1e-10) -> Tensor:
    """Per sample (ISNet's background term): |H| divided by its mean over the foreground (per sample and class,
    over channels and pixels), kept on the background, GWRP-pooled over the pixels of each channel, squashed by
    b/(b + E) and scored −log(1 − ·), averaged over channels and classes. ``heatmaps``: B×K×C×H×W; ``foreground``:
    B×1×H×W in {0, 1}."""
    fg = foreground[:, None]  # B×1×1×H×W
    magnitude = heatmaps.abs()
    area = (fg.expand_as(magnitude)).sum(dim=(-1, -2, -3), keepdim=True)
    roi_mean = (magnitude * fg).sum(dim=(-1, -2, -3), keepdim=True) / (area + eps)
    background = (magnitude / (roi_mean + eps)) * (1 - fg)
    pooled = gwrp(background.flatten(-2), decay)  # B×K×C
    squashed = (pooled / (pooled + e)).clamp(max=1 - 1e-7)
    return -torch.log1p(-squashed).mean(dim=(-1, -2))


def foreground_loss(heatmaps: Tensor, foreground: Tensor, cut1: float, cut2: float) -> Tensor:
    """Per sample (ISNet's foreground term, the 'L2' variant): F = Σ over the foreground of |H| per class, then
    (min(F/C1, 1) − 1)² + (max(F/C1, C2/C1) − C2/C1)², averaged over classes: zero while C1 ≤ F ≤ C2."""
    total = (heatmaps.abs() * foreground[:, None]).sum(dim=(-1, -2, -3))  # B×K
    scaled = total / cut1
    low = (scaled.clamp(max=1.0) - 1.0).pow(2)
    high = (scaled.clamp(min=cut2 / cut1) - cut2 / cut1).pow(2)
    return (low + high).mean(-1)


@register_method("isnet")
class ISNet(MaskGuided):
    """ISNet (Faster ISNet's LRP-Flex form): L = (1 − P)·CE + P·(A·L_background + B·L_foreground), the maps
    LRP-Flex heatmaps from the explanation engine (differentiable: double backward) of every class (or one per
    sample), the foreground = where the masks say the label's evidence is. First ``calibration_epochs`` of plain
    cross-entropy fix the cut-offs (recorded in the run's epoch metrics as ``isnet_cut1``/``isnet_cut2``)."""

    Hparams = ISNetHparams
    protocols = {"fast": {"epochs": 3, "calibration_epochs": 1, "logits": "stochastic", "calibration_samples": 512}}
    requires = frozenset({"labels", "masks"})
    perf_hparams = {"cut1": 1.0}  # past calibration: the heatmap step, not plain cross-entropy

    def build(self) -> None:
        super().build()
        by_hand = self.hp.cut1 > 0
        self.cuts = torch.tensor([self.hp.cut1, self.hp.cut1 * self.hp.cut_ratio] if by_hand else [0.0, 0.0],
                                 device=self.device)
        self.calibrating = not by_hand

    def on_epoch_start(self, epoch: int) -> None:
        if self.calibrating and epoch >= self.hp.calibration_epochs:
            self.calibrate()

    @torch.no_grad()
    def calibrate(self) -> None:
        """C1 = the mean total absolute relevance of the current network's maps (train mode, as in the loss) on
        the first training images."""
        assert self.ctx.train is not None
        was_training = self.model.training
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        self.model.train()  # the maps the loss will see use batch statistics; the running ones are restored
        totals, seen = [], 0
        for batch in self.ctx.train.batches(256):
            if seen >= self.hp.calibration_samples:
                break
            x = batch.x[: self.hp.calibration_samples - seen]
            totals.append(self.heatmaps(x, create_graph=False)[0].abs().sum(dim=(-1, -2, -3)).flatten())
            seen += x.shape[0]
        self.model.load_state_dict(buffers, strict=False)
        self.model.train(was_training)
        cut1 = torch.cat(totals).mean().clamp(min=1e-8)
        self.cuts = torch.stack([cut1, cut1 * self.hp.cut_ratio])
        self.calibrating = False

    def heatmaps(self, x: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        """(B×K'×C×H×W LRP-Flex maps, the logits of the first pass): K' = K classes, or 1 (stochastic)."""
        eps = self.hp.lrp_eps
        if self.hp.logits == "stochastic":
            heatmap, logits, _ = explain_with_logits(self.model, x, lambda z: explained_classes(z, 0.5), "lrp_flex",
                                                     create_graph=create_graph, eps=eps)
            return heatmap[:, None], logits
        maps, logits = [], None
        for k in range(self.ctx.num_classes):
            target = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            if logits is None:
                heatmap, logits, _ = explain_with_logits(self.model, x, target, "lrp_flex",
                                                         create_graph=create_graph, eps=eps)
            else:
                heatmap = explain(self.model, x, target, "lrp_flex", create_graph=create_graph, eps=eps)
            maps.append(heatmap)
        assert logits is not None
        return torch.stack(maps, 1), logits

    def losses(self, batch: Batch, create_graph: bool) -> dict[str, Tensor]:
        if self.calibrating:
            ce = F.cross_entropy(self.model(batch.x), batch.y)
            return {"ce": ce, "loss": ce}
        hp = self.hp
        maps, logits = self.heatmaps(batch.x, create_graph)
        foreground = self.region(batch)
        ce = F.cross_entropy(logits, batch.y)
        background = background_loss(maps, foreground, hp.gwrp_decay, hp.activation_e).mean()
        fg = foreground_loss(maps, foreground, self.cuts[0], self.cuts[1]).mean()
        heat = hp.background_weight * background + hp.foreground_weight * fg
        return {"ce": ce, "background": background, "foreground": fg,
                "loss": (1 - hp.heat_weight) * ce + hp.heat_weight * heat}

    def selectable(self) -> bool:
        """The calibration epochs train a plain network, not ISNet: they are not candidates."""
        return not self.calibrating

    def epoch_metrics(self) -> dict[str, float]:
        return {} if self.calibrating else {"isnet_cut1": float(self.cuts[0]), "isnet_cut2": float(self.cuts[1])}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cuts": self.cuts, "calibrating": self.calibrating}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.cuts, self.calibrating = state["cuts"].to(self.device), bool(state["calibrating"])
