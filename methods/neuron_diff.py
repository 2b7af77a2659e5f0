"""Neuron differentiation (Niu, Wu, Li, Li & Zhao, "Rectifying Shortcut Learning via Cellular
Differentiation in Deep Learning Neurons"; seed 003, Section 3.2 and Algorithm 1).

Stages, laid over the runner's epochs (``on_epoch_start`` switches them):
1. ``bias``: the network is trained with GCE (q = 0.7, Eq. 4), which amplifies the shortcut; at its end the
   training set is split by correctness: D_a = misclassified samples (mostly bias-conflicting), D_b =
   correctly classified ones.
2. ``vanilla``: the parameters are re-initialised and trained with CE (Adam), as in Sec. 4.1.
3. ``masks``: θ frozen, two parameter masks m_a, m_b over every conv/linear weight, sampled with a hard
   straight-through Gumbel-sigmoid, minimise L_m = L_s(m_a, D_a) + L_s(m_b, D_b) + IoU(m_a, m_b) (Eq. 5),
   L_s = GCE(M∘m) + λ Σ m|θ| (Eq. 6). Every ``reassign_every`` epochs D is re-assigned: a sample a
   sub-model gets wrong moves to the other subset; this repeats until an assignment leaves D unchanged.
4. ``finetune``: masks binarised (1[π ≥ 0]), θ fine-tuned on both subsets (Algorithm 1's "fine-tuning Θ for
   evaluation").
Prediction: M ∘ m_a (binarised), the sub-model of D_a, i.e. of the bias-conflicting samples. Before the mask
stage the plain network predicts.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bench.data import Batch
from bench.method import Method, TrainHparams, register_method

STAGES = ("bias", "vanilla", "masks", "finetune")
MASK_INIT = 1.5  # DCWP's initial mask logit (σ(1.5) ≈ 0.82: most weights kept at first)


@dataclass
class NeuronDiffHparams(TrainHparams):
    """Sec. 4.1, CMNIST: batch 256; GCE pre-training 2k iterations with SGD lr 0.01; re-initialisation and
    10k CE iterations with Adam lr 0.01; masks 2k iterations with Adam lr 0.01, λ = 1e-8, re-assignment
    every 3 epochs. At 48,000 training images and batch 256 that is ≈ 11 + 53 + 11 epochs; fine-tuning
    (unstated in the paper) takes 5 epochs at Adam lr 1e-3 as in DCWP's re-training."""

    epochs: int = 80
    batch_size: int = 256
    lr: float = 1e-2  # the GCE stage (SGD)
    momentum: float = 0.9
    bias_epochs: int = 11
    vanilla_epochs: int = 53
    finetune_epochs: int = 5
    adam_lr: float = 1e-2
    finetune_lr: float = 1e-3
    gce_q: float = 0.7
    mask_size_weight: float = 1e-8
    iou_weight: float = 1.0
    temperature: float = 1.0
    reassign_every: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.bias_epochs, self.vanilla_epochs, self.finetune_epochs) < 0:
            raise ValueError("stage lengths must be >= 0")
        if self.mask_epochs < 1:
            raise ValueError(f"epochs ({self.epochs}) must exceed bias_epochs + vanilla_epochs + finetune_epochs "
                             f"({self.epochs - self.mask_epochs}) by at least one mask epoch")
        if not 0 < self.gce_q <= 1 or self.temperature <= 0 or self.reassign_every < 1:
            raise ValueError("need 0 < gce_q <= 1, temperature > 0 and reassign_every >= 1")

    @property
    def mask_epochs(self) -> int:
        return self.epochs - self.bias_epochs - self.vanilla_epochs - self.finetune_epochs

    def stage(self, epoch: int) -> str:
        ends = (self.bias_epochs, self.bias_epochs + self.vanilla_epochs, self.epochs - self.finetune_epochs)
        return next((name for name, end in zip(STAGES, ends, strict=False) if epoch < end), "finetune")


def gce(logits: Tensor, y: Tensor, q: float) -> Tensor:
    """Per-sample generalised cross-entropy (Zhang & Sabuncu 2018; Eq. 4): (1 − p_y^q) / q."""
    p_y = F.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1).clamp(min=1e-8)
    return (1 - p_y.pow(q)) / q


def gumbel_sigmoid(logits: Tensor, temperature: float) -> Tensor:
    """Hard straight-through Gumbel-sigmoid: 1[σ((π + g₁ − g₂)/τ) > 0.5] forward, the soft value's gradient
    backward (g₁, g₂ standard Gumbel noise, i.e. logistic noise g₁ − g₂)."""
    u = torch.rand_like(logits).clamp(1e-10, 1 - 1e-10)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    return (soft > 0.5).to(soft.dtype) + soft - soft.detach()


def soft_iou(mask_a: list[Tensor], mask_b: list[Tensor]) -> Tensor:
    """Σ m_a m_b / (Σ m_a + Σ m_b − Σ m_a m_b) over all masked weights: 1 for identical masks, 0 for disjoint."""
    inter = torch.stack([(a * b).sum() for a, b in zip(mask_a, mask_b, strict=True)]).sum()
    total = torch.stack([a.sum() + b.sum() for a, b in zip(mask_a, mask_b, strict=True)]).sum()
    return inter / (total - inter).clamp(min=1e-8)


def masked_weight_names(model: nn.Module) -> list[str]:
    """The conv and linear weights that get masks."""
    return [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))]


@register_method("neuron_diff")
class NeuronDiff(Method):
    """Neuron differentiation (seed 003, Eq. 4-6, Algorithm 1): see the module docstring for the stages.
    The paper's CMNIST protocol uses its 3-conv CNN (``--model cnn3``; the ``paper-nd-cmnist`` suite sets it)."""

    Hparams = NeuronDiffHparams
    protocols = {"fast": {"epochs": 6, "bias_epochs": 1, "vanilla_epochs": 2, "finetune_epochs": 1,
                          "reassign_every": 1, "batch_size": 128}}
    requires = frozenset({"labels"})

    def build(self) -> None:
        assert self.ctx.train is not None
        self.model = self.new_model()
        self.names = masked_weight_names(self.model)
        shapes = dict(self.model.named_parameters())
        self.mask_logits = nn.ParameterDict({
            f"{side}{i}": nn.Parameter(torch.full_like(shapes[name], MASK_INIT))
            for side in ("a", "b") for i, name in enumerate(self.names)
        }).to(self.device)
        n = len(self.ctx.train)
        self.in_a = torch.zeros(n, dtype=torch.bool, device=self.device)  # D_a membership (D_b: the rest)
        self.stable = torch.zeros((), dtype=torch.bool, device=self.device)  # the last re-assignment changed nothing
        self.current = ""
        self._enter(self.hp.stage(0))

    # --- stages ------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        stage = self.hp.stage(epoch)
        if stage != self.current:
            self._enter(stage)
        elif stage == "masks" and epoch > 0 and (epoch - self.hp.bias_epochs - self.hp.vanilla_epochs) \
                % self.hp.reassign_every == 0 and not bool(self.stable):
            self.reassign()

    def _enter(self, stage: str) -> None:
        hp = self.hp
        if stage == "bias":
            self.optimizer = self.sgd(self.model.parameters())
        elif stage == "vanilla":
            if self.current == "bias":  # the GCE model's mistakes define D_a; then θ starts again
                self.in_a = ~self.correct(lambda x: self.model(x))
                self.model.load_state_dict(self.new_model().state_dict())
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.adam_lr)
        elif stage == "masks":
            self.model.requires_grad_(False)
            self.optimizer = torch.optim.Adam(self.mask_logits.parameters(), lr=hp.adam_lr)
        else:
            self.model.requires_grad_(True)
            self.mask_logits.requires_grad_(False)
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hp.finetune_lr)
        self.current = stage
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]

    # --- sub-models ----------------------------------------------------------------------------------
    def masks(self, side: str, sample: bool) -> list[Tensor]:
        logits = [self.mask_logits[f"{side}{i}"] for i in range(len(self.names))]
        if sample:
            return [gumbel_sigmoid(p, self.hp.temperature) for p in logits]
        return [(p >= 0).to(p.dtype) for p in logits]

    def sub_model(self, x: Tensor, masks: list[Tensor]) -> Tensor:
        params = dict(self.model.named_parameters())
        weights = {name: params[name] * mask for name, mask in zip(self.names, masks, strict=True)}
        return functional_call(self.model, weights, (x,))

    @torch.no_grad()
    def correct(self, predict: Any) -> Tensor:
        """Which training samples ``predict`` classifies correctly (eval mode)."""
        assert self.ctx.train is not None
        was_training = self.model.training
        self.model.eval()
        hits = []
        for batch in self.ctx.train.batches(1024):
            hits.append(predict(batch.x).argmax(1) == batch.y)
        self.model.train(was_training)
        return torch.cat(hits)

    def reassign(self) -> None:
        """A sample its sub-model gets wrong moves to the other subset; ``stable`` once nothing moves."""
        right_a = self.correct(lambda x: self.sub_model(x, self.masks("a", sample=False)))
        right_b = self.correct(lambda x: self.sub_model(x, self.masks("b", sample=False)))
        new = torch.where(self.in_a, right_a, ~right_b)
        self.stable = torch.tensor(torch.equal(new, self.in_a), device=self.device)
        self.in_a = new

    # --- losses --------------------------------------------------------------------------------------
    def subset_loss(self, logits: Tensor, y: Tensor, member: Tensor, masks: list[Tensor]) -> Tensor:
        """L_s (Eq. 6): GCE averaged over the batch's members of the subset, plus λ Σ m|θ|."""
        weight = member.float()
        fit = (gce(logits, y, self.hp.gce_q) * weight).sum() / weight.sum().clamp(min=1.0)
        params = dict(self.model.named_parameters())
        size = torch.stack([(m * params[name].abs()).sum() for name, m in zip(self.names, masks, strict=True)]).sum()
        return fit + self.hp.mask_size_weight * size

    def mask_losses(self, batch: Batch, sample: bool) -> dict[str, Tensor]:
        assert batch.index is not None
        in_a = self.in_a[batch.index]
        mask_a, mask_b = self.masks("a", sample), self.masks("b", sample)
        loss_a = self.subset_loss(self.sub_model(batch.x, mask_a), batch.y, in_a, mask_a)
        loss_b = self.subset_loss(self.sub_model(batch.x, mask_b), batch.y, ~in_a, mask_b)
        iou = soft_iou(mask_a, mask_b)
        return {"loss_a": loss_a, "loss_b": loss_b, "iou": iou, "loss": loss_a + loss_b + self.hp.iou_weight * iou}

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        if self.current == "bias":
            logs = {"loss": gce(self.model(batch.x), batch.y, self.hp.gce_q).mean()}
        elif self.current == "vanilla":
            logs = {"loss": F.cross_entropy(self.model(batch.x), batch.y)}
        else:
            logs = self.mask_losses(batch, sample=self.current == "masks")
        logs["loss"].backward()
        logs = {k: v.detach() for k, v in logs.items()}
        logs["grad_norm"] = self.clip_and_step(self.optimizer, self.params)
        return logs

    def selectable(self) -> bool:
        """Epochs before the mask stage are not candidates for selection: their network (the GCE bias model,
        then the vanilla one) is not the method's predictor."""
        return self.current in ("masks", "finetune")

    def predict(self, x: Tensor) -> Tensor:
        if self.current in ("masks", "finetune"):
            return self.sub_model(x, self.masks("a", sample=False))
        return self.model(x)

    def predictor(self) -> nn.Module:
        """In the mask and fine-tuning stages, a copy of the network with m_a's binary mask applied to its
        weights (the module that ``predict`` computes); before them, the network itself."""
        if self.current not in ("masks", "finetune"):
            return self.model
        masked = copy.deepcopy(self.model)
        params = dict(masked.named_parameters())
        with torch.no_grad():
            for name, mask in zip(self.names, self.masks("a", sample=False), strict=True):
                params[name].mul_(mask)
        return masked

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mask_logits": self.mask_logits.state_dict(), "in_a": self.in_a,
                "stable": self.stable, "stage": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = ""  # enter the saved stage without its transition work (split, re-initialisation)
        self._enter(state["stage"])
        super().load_state_dict(state)
        self.mask_logits.load_state_dict(state["mask_logits"])
        self.in_a, self.stable = state["in_a"], state["stable"]

    def trainable(self, module: nn.Module | None = None) -> list[Tensor]:
        """The parameters the current stage trains (θ, or the mask logits in the mask stage)."""
        return super().trainable(module) if module is not None else list(self.params)
