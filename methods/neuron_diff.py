"""Neuron differentiation (Niu, Wu, Li, Li & Zhao, "Rectifying Shortcut Learning via Cellular
Differentiation in Deep Learning Neurons"; seed 003, Section 3.2, Algorithm 1 and Section 4.1).

Stages, laid over the runner's epochs (``on_epoch_start`` switches them):
1. ``bias``: the network is trained with GCE (q = 0.7, Eq. 4), which amplifies the shortcut. At its end the
   GCE model's mistakes become the *core* of D_a (mostly bias-conflicting samples).
2. ``vanilla``: the parameters are re-initialised and trained with CE (Adam), as in Sec. 4.1.
3. Algorithm 1's loop, ``masks`` and ``tune`` epochs in cycles of ``reassign_every`` + ``tune_epochs``:
   - ``masks``: θ frozen, two parameter masks m_a, m_b over every conv/linear weight, sampled with a hard
     straight-through Gumbel-sigmoid, minimise L_m = L_s(m_a, D_a) + L_s(m_b, D_b) + IoU(m_a, m_b) (Eq. 5),
     L_s = GCE(M∘m) + λ Σ m|θ| (Eq. 6);
   - ``tune``: "fine-tuning Θ for evaluation": masks binarised (1[π ≥ 0]), θ trained on both subsets;
   - then D is re-assigned from the fine-tuned, binarised sub-models: a core sample that A gets wrong leaves
     the core, a sample B gets wrong joins it; the loop's re-assignments stop once one changes nothing.
4. ``finetune``: a last fine-tuning of θ with the binarised masks (length unstated in the paper; DCWP's
   re-training recipe).

D_a and D_b (Sec. 4.1: "re-assignment was conducted by combining wrong-answered data and a little random
data. For sub-model A, the wrong-answered data has the weight of (K − 1)/WrongAnsweredRatio. For sub-model B,
the wrong-answered data has the weight of 0"): A's loss weights a core sample (K − 1)/r (r = core share of
the training set) and a random share ``a_random_fraction`` of the other samples 1; B's loss weights the
core 0 and every other sample 1. With the default fraction 1 the core carries (K − 1)/K of A's weight, so
that D_a "is mainly composed of incorrectly categorized samples and a small number of correctly categorized
samples" (Sec. 3.2) and, when the core is the bias-conflicting set, A's data is colour-balanced.

Each sub-model keeps its own batch-norm running statistics (the paper is silent; shared statistics would
evaluate A with statistics last updated by B). Prediction: M ∘ m_a (binarised) with A's statistics, the
sub-model of D_a. Before the loop the plain network predicts.
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
from bench.losses import gce, weighted_mean
from bench.method import Method, TrainHparams, register_method

STAGES = ("bias", "vanilla", "masks", "tune", "finetune")
SIDES = ("a", "b")


@dataclass
class NeuronDiffHparams(TrainHparams):
    """Sec. 4.1, CMNIST: batch 256; GCE pre-training 2k iterations with SGD lr 0.01; re-initialisation and
    10k CE iterations with Adam lr 0.01; masks 2k iterations with Adam lr 0.01, λ = 1e-8, re-assignment
    every 3 epochs. At 48,000 training images and batch 256 that is ≈ 11 + 53 epochs, then a loop of
    14 epochs holding 11 mask epochs (3 cycles of 3 mask epochs and 1 fine-tuning epoch, then 2 mask epochs),
    then 5 epochs of final fine-tuning. The fine-tuning lengths and lr are unstated in the paper: one epoch per
    cycle, Adam lr 1e-3 (DCWP's re-training lr)."""

    epochs: int = 83
    batch_size: int = 256
    lr: float = 1e-2  # the GCE stage (SGD)
    momentum: float = 0.0  # "SGD (learning rate=0.01)": no momentum stated
    bias_epochs: int = 11
    vanilla_epochs: int = 53
    finetune_epochs: int = 5
    tune_epochs: int = 1  # per cycle of the loop (0: re-assign from un-fine-tuned sub-models)
    adam_lr: float = 1e-2
    finetune_lr: float = 1e-3
    gce_q: float = 0.7
    mask_size_weight: float = 1e-8
    iou_weight: float = 1.0
    temperature: float = 1.0
    reassign_every: int = 3
    a_random_fraction: float = 1.0  # share of the non-core samples mixed into D_a at weight 1
    # the initial mask logit (unstated in the paper; DCWP's 1.5: σ(1.5) ≈ 0.82, most weights kept at first).
    # Adam moves a logit by about adam_lr per step, so contested weights leave a mask after ≈ mask_init/adam_lr
    # steps: a larger value delays and spreads the separation
    mask_init: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.bias_epochs, self.vanilla_epochs, self.finetune_epochs, self.tune_epochs) < 0:
            raise ValueError("stage lengths must be >= 0")
        if self.loop_epochs < 1:
            raise ValueError(f"epochs ({self.epochs}) must exceed bias_epochs + vanilla_epochs + finetune_epochs "
                             f"({self.epochs - self.loop_epochs}) by at least one mask epoch")
        if not 0 < self.gce_q <= 1 or self.temperature <= 0 or self.reassign_every < 1:
            raise ValueError("need 0 < gce_q <= 1, temperature > 0 and reassign_every >= 1")
        if not 0 <= self.a_random_fraction <= 1:
            raise ValueError("a_random_fraction must be in [0, 1]")
        if not 0 < self.mask_init <= 20:
            raise ValueError(f"mask_init must be in (0, 20] (a positive logit: every weight starts in both masks), "
                             f"got {self.mask_init}")

    @property
    def loop_epochs(self) -> int:
        return self.epochs - self.bias_epochs - self.vanilla_epochs - self.finetune_epochs

    @property
    def cycle(self) -> int:
        return self.reassign_every + self.tune_epochs

    def stage(self, epoch: int) -> str:
        if epoch < self.bias_epochs:
            return "bias"
        if epoch < self.bias_epochs + self.vanilla_epochs:
            return "vanilla"
        if epoch >= self.epochs - self.finetune_epochs:
            return "finetune"
        return "masks" if self.loop_position(epoch) < self.reassign_every else "tune"

    def loop_position(self, epoch: int) -> int:
        return (epoch - self.bias_epochs - self.vanilla_epochs) % self.cycle

    def reassigns_at(self, epoch: int) -> bool:
        """Whether D is re-assigned before ``epoch``: at the start of every cycle but the first."""
        k = epoch - self.bias_epochs - self.vanilla_epochs
        return 0 < k < self.loop_epochs and k % self.cycle == 0


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


def subset_weights(core: Tensor, extra: Tensor, share: Tensor, num_classes: int) -> dict[str, Tensor]:
    """Per-sample loss weights of the two sub-models (Sec. 4.1) for samples with core membership ``core`` and
    A's random extra membership ``extra``: A weights a core ("wrong-answered") sample (K − 1)/r, r = ``share``,
    the core's share of the whole training set, and an extra sample 1; B weights the core 0, the rest 1."""
    up = (num_classes - 1) / share.clamp(min=1e-12)
    return {"a": torch.where(core, up, extra.float()), "b": (~core).float()}


def masked_weight_names(model: nn.Module) -> list[str]:
    """The conv and linear weights that get masks."""
    return [f"{name}.weight" if name else "weight" for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))]


@register_method("neuron_diff")
class NeuronDiff(Method):
    """Neuron differentiation (seed 003, Eq. 4-6, Algorithm 1): see the module docstring for the stages.
    The paper's CMNIST protocol uses its 3-conv CNN (``--model cnn3``; the ``paper-nd-cmnist`` suite sets it)."""

    Hparams = NeuronDiffHparams
    protocols = {"fast": {"epochs": 7, "bias_epochs": 1, "vanilla_epochs": 2, "finetune_epochs": 1,
                          "reassign_every": 1, "batch_size": 128}}
    requires = frozenset({"labels"})
    step_schedule = False  # its stages set their optimisers and rates
    perf_hparams = {"bias_epochs": 0, "vanilla_epochs": 0}  # time the mask step (both sub-models), the costliest

    def build(self) -> None:
        assert self.ctx.train is not None
        hp = self.hp
        self.model = self.new_model()
        self.names = masked_weight_names(self.model)
        shapes = dict(self.model.named_parameters())
        self.mask_logits = nn.ParameterDict({
            f"{side}{i}": nn.Parameter(torch.full_like(shapes[name], hp.mask_init))
            for side in SIDES for i, name in enumerate(self.names)
        }).to(self.device)
        n = len(self.ctx.train)
        self.core = torch.zeros(n, dtype=torch.bool, device=self.device)  # A's "wrong-answered" samples
        self.extra = torch.zeros(n, dtype=torch.bool, device=self.device)  # A's random non-core samples
        self.stable = torch.zeros((), dtype=torch.bool, device=self.device)  # the last re-assignment changed nothing
        self.bn: dict[str, dict[str, Tensor]] = {side: self._buffers() for side in SIDES}
        theta = list(self.model.parameters())
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "bias": torch.optim.SGD(theta, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay),
            "vanilla": torch.optim.Adam(theta, lr=hp.adam_lr),
            "masks": torch.optim.Adam(self.mask_logits.parameters(), lr=hp.adam_lr),
            "tune": torch.optim.Adam(theta, lr=hp.finetune_lr),
        }
        self.current = ""
        self._enter(hp.stage(0))

    def _buffers(self) -> dict[str, Tensor]:
        return {name: b.detach().clone() for name, b in self.model.named_buffers()}

    # --- stages ------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        stage = self.hp.stage(epoch)
        if self.hp.reassigns_at(epoch) and not bool(self.stable):
            self.reassign()
        if stage != self.current:
            self._enter(stage)

    def _enter(self, stage: str) -> None:
        if stage == "vanilla" and self.current == "bias":  # the GCE model's mistakes: D_a's core; θ restarts
            self.set_core(~self.correct(lambda x: self.model(x)))
            self.model.load_state_dict(self.new_model().state_dict())
        if stage in ("masks", "tune") and self.current == "vanilla":  # each sub-model starts from M's statistics
            self.bn = {side: self._buffers() for side in SIDES}
        masking = stage == "masks"
        self.model.requires_grad_(not masking)
        self.mask_logits.requires_grad_(masking)
        self.optimizer = self.optimizers["tune" if stage == "finetune" else stage]
        self.current = stage
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]

    def set_core(self, core: Tensor) -> None:
        """A new core of D_a; A's random share of the other samples is drawn again (global RNG: resumable)."""
        draw = torch.rand(core.shape[0]).to(self.device) < self.hp.a_random_fraction
        self.core, self.extra = core, draw & ~core

    # --- sub-models ----------------------------------------------------------------------------------
    def masks(self, side: str, sample: bool) -> list[Tensor]:
        logits = [self.mask_logits[f"{side}{i}"] for i in range(len(self.names))]
        if sample:
            return [gumbel_sigmoid(p, self.hp.temperature) for p in logits]
        return [(p >= 0).to(p.dtype) for p in logits]

    def sub_model(self, x: Tensor, side: str, masks: list[Tensor]) -> Tensor:
        """M ∘ m with sub-model ``side``'s batch-norm statistics (updated in place in train mode)."""
        params = dict(self.model.named_parameters())
        weights = {name: params[name] * mask for name, mask in zip(self.names, masks, strict=True)}
        return functional_call(self.model, {**weights, **self.bn[side]}, (x,))

    def binary(self, side: str) -> Any:
        masks = self.masks(side, sample=False)
        return lambda x: self.sub_model(x, side, masks)

    @torch.no_grad()
    def correct(self, predict: Any, split: Any = None) -> Tensor:
        """Which samples of ``split`` (default: the training split) ``predict`` classifies correctly (eval mode)."""
        split = split if split is not None else self.ctx.train
        assert split is not None
        was_training = self.model.training
        self.model.eval()
        hits = [predict(batch.x).argmax(1) == batch.y for batch in split.batches(1024)]
        self.model.train(was_training)
        return torch.cat(hits)

    def reassign(self) -> None:
        """A core sample A gets wrong leaves the core, a sample B gets wrong joins it; ``stable`` once nothing
        moves."""
        right_a, right_b = self.correct(self.binary("a")), self.correct(self.binary("b"))
        new = torch.where(self.core, right_a, ~right_b)
        self.stable = torch.tensor(torch.equal(new, self.core), device=self.device)
        self.set_core(new)

    # --- losses --------------------------------------------------------------------------------------
    def subset_loss(self, logits: Tensor, y: Tensor, weight: Tensor, masks: list[Tensor]) -> Tensor:
        """L_s (Eq. 6): the weighted mean GCE over the batch, plus λ Σ m|θ|."""
        params = dict(self.model.named_parameters())
        size = torch.stack([(m * params[name].abs()).sum() for name, m in zip(self.names, masks, strict=True)]).sum()
        return weighted_mean(gce(logits, y, self.hp.gce_q), weight) + self.hp.mask_size_weight * size

    def mask_losses(self, batch: Batch, sample: bool) -> dict[str, Tensor]:
        assert batch.index is not None
        index = batch.index
        weights = subset_weights(self.core[index], self.extra[index], self.core.float().mean(),
                                 self.ctx.num_classes)
        logs: dict[str, Tensor] = {}
        masks = {}
        for side in SIDES:
            masks[side] = self.masks(side, sample)
            logs[f"loss_{side}"] = self.subset_loss(self.sub_model(batch.x, side, masks[side]), batch.y,
                                                    weights[side], masks[side])
        logs["iou"] = soft_iou(masks["a"], masks["b"])
        logs["loss"] = logs["loss_a"] + logs["loss_b"] + self.hp.iou_weight * logs["iou"]
        return logs

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        if self.current == "bias":
            logs = {"loss": gce(self.model(batch.x), batch.y, self.hp.gce_q).mean()}
        elif self.current == "vanilla":
            logs = {"loss": F.cross_entropy(self.model(batch.x), batch.y)}
        else:
            logs = self.mask_losses(batch, sample=self.current == "masks")
        return self.descend(logs)

    def in_loop(self) -> bool:
        return self.current in ("masks", "tune", "finetune")

    def selectable(self) -> bool:
        """Candidates for selection: the network after a fine-tuning epoch (Algorithm 1 evaluates only
        fine-tuned sub-models); not the GCE or vanilla network, nor un-fine-tuned binarised masks."""
        return self.current in ("tune", "finetune") or (self.current == "masks" and self.hp.tune_epochs == 0)

    def predict(self, x: Tensor) -> Tensor:
        return self.sub_model(x, "a", self.masks("a", sample=False)) if self.in_loop() else self.model(x)

    def predictor(self) -> nn.Module:
        """In the loop and after it, a copy of the network with m_a's binary mask applied to its weights and
        A's batch-norm statistics (the module that ``predict`` computes); before it, the network itself."""
        if not self.in_loop():
            return self.model
        masked = copy.deepcopy(self.model)
        params = dict(masked.named_parameters())
        buffers = dict(masked.named_buffers())
        with torch.no_grad():
            for name, mask in zip(self.names, self.masks("a", sample=False), strict=True):
                params[name].mul_(mask)
            for name, value in self.bn["a"].items():
                buffers[name].copy_(value)
        return masked

    def epoch_metrics(self) -> dict[str, float]:
        """The differentiation curve (Fig. 4 of the paper): per-layer IoU and kept share of the binary masks,
        each sub-model's accuracy on the (biased) validation split, the core's share of the training set."""
        if not self.in_loop():
            return {}
        assert self.ctx.val is not None
        out: dict[str, float] = {"nd_core_share": float(self.core.float().mean())}
        binary = {side: self.masks(side, sample=False) for side in SIDES}
        for name, a, b in zip(self.names, binary["a"], binary["b"], strict=True):
            layer = name.removesuffix(".weight").replace(".", "_")
            out[f"nd_iou_{layer}"] = float(soft_iou([a], [b]))
            out[f"nd_keep_a_{layer}"], out[f"nd_keep_b_{layer}"] = float(a.mean()), float(b.mean())
        out["nd_iou"] = float(soft_iou(binary["a"], binary["b"]))
        for side in SIDES:
            out[f"nd_{side}_val_acc"] = float(self.correct(self.binary(side), self.ctx.val).float().mean())
        return out

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "mask_logits": self.mask_logits.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "core": self.core, "extra": self.extra, "stable": self.stable, "bn": self.bn, "stage": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = ""  # enter the saved stage without its transition work (split, re-initialisation)
        self._enter(state["stage"])
        self.model.load_state_dict(state["model"])
        self.mask_logits.load_state_dict(state["mask_logits"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.core, self.extra, self.stable = state["core"], state["extra"], state["stable"]
        self.bn = {side: {k: v.to(self.device) for k, v in state["bn"][side].items()} for side in SIDES}

    def trainable(self, module: nn.Module | None = None) -> list[Tensor]:
        """The parameters the current stage trains (θ, or the mask logits in the mask stage)."""
        return super().trainable(module) if module is not None else list(self.params)
