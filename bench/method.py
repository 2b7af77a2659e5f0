"""The method contract. A method owns its models, optimisers, losses and backward passes; the runner
owns epochs, evaluation, checkpoints, logging, timing and selection.

A method file defines one class, decorated with ``@register_method("name")``, with:
- a docstring citing its paper and equations;
- ``Hparams``: a dataclass subclassing ``TrainHparams`` whose defaults are the paper's protocol, and
  ``protocols``: per-protocol overrides (e.g. ``{"fast": {"epochs": 2}}``);
- ``requires``: its supervision budget (subset of ``SUPERVISION``). The engine enforces it: batches and
  the whole-split views in ``MethodContext`` hold only the fields it grants (``bench.data.GRANTED_BY``),
  and reading another raises ``BudgetViolation``; no method ever sees a test split;
- ``build()``, ``step(batch) -> dict of scalar tensors`` (no host sync), ``predict(x) -> logits``,
  optionally ``val_loss(batch)`` (the validation objective used for IID-validation selection),
  ``selectable()`` (whether the current epoch may be selected), ``on_epoch_start(epoch)`` (schedules,
  whole-training-set stages) and ``epoch_metrics()`` (the method's own curves, recorded with each evaluation).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.augment import AUGMENTATIONS
from bench.config import build_dataclass
from bench.data import Batch, BiasedDataset, Budget, BudgetedSplit
from bench.errors import UserError
from bench.registry import Registry, import_all_modules

# What a method may be given to train on. (Selection-time data, such as an unbiased validation split, is a
# property of the selection rule, not of the method: see ``bench.selection``.)
SUPERVISION = ("labels", "group_labels", "bias_labels", "masks", "teacher", "debiased_view")


@dataclass
class TrainHparams:
    """Optimisation settings every method has (SGD with momentum and grad-norm clipping, as in the papers)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    augment: str = "none"  # training-batch augmentation (bench.augment): none | crop_flip
    # step schedule: lr × lr_gamma^(number of milestones reached), a milestone m taking effect from epoch m + 1
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    # evaluation cadence (``bench.selection.ValidationChoices``): the validation splits every ``eval_every`` epochs
    # (the candidates of selection) and after the last; the test splits and the explanation probe at every
    # ``test_every``-th validation and after the last epoch; the epochs a rule reading validation data finally
    # chooses are measured after training from their kept state. Selected rows are the same at any ``test_every``;
    # curves are sparser.
    eval_every: int = 1
    test_every: int = 1
    # a teacher-student method's networks start as copies of the teacher (the explanation-distillation paper's
    # COCO-on-Places protocol); needs a teacher of the student's architecture
    init_from_teacher: bool = False

    def __post_init__(self) -> None:
        self.lr_milestones = _milestones(self.lr_milestones)
        if any(b <= a for a, b in zip(self.lr_milestones, self.lr_milestones[1:], strict=False)):
            raise ValueError(f"lr_milestones must be increasing epochs >= 1, got {list(self.lr_milestones)}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        # upper bounds: a larger value is a typo (10**12 epochs never ends), not an experiment
        if not 1 <= self.epochs <= 100_000:
            raise ValueError(f"epochs must be in [1, 100000], got {self.epochs}")
        if not (1 <= self.eval_every <= self.epochs or self.eval_every == 1) or self.test_every < 1:
            raise ValueError(f"eval_every must be in [1, epochs] and test_every >= 1, got {self.eval_every} and "
                             f"{self.test_every}")
        if not 1 <= self.batch_size <= 1_000_000:
            raise ValueError(f"batch_size must be in [1, 1000000], got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if not 0 <= self.momentum < 1:
            raise ValueError("momentum must be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0 (grad_clip 0 = off)")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")


def _milestones(value: Any) -> tuple[int, ...]:
    """Epoch milestones from a list, a tuple or a CLI string ("25,130" or "[25, 130]")."""
    if isinstance(value, str):
        value = [v for v in value.strip().strip("[]").replace(" ", "").split(",") if v]
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"lr_milestones must be a list of epochs, got {value!r}") from None
    if any(m < 1 or isinstance(v, float) and not float(v).is_integer() for m, v in zip(out, value, strict=True)):
        raise ValueError(f"lr_milestones must be increasing epochs >= 1, got {list(value)}")
    return out


# options added after runs were recorded: left out of a run's config at their default, so that adding an option
# never renames the runs made before it
LATER_OPTIONS: dict[str, Any] = {"lr_milestones": (), "lr_gamma": 0.1, "mask_init": 1.5, "eval_every": 1,
                                 "test_every": 1, "init_from_teacher": False}


@dataclass
class MethodContext:
    """Everything a method may use to build itself: no dataset, only budgeted views of its training and
    validation splits (``train``/``val``: for whole-split work such as re-assignment or pre-computed teacher
    outputs; training batches still come from the runner)."""

    hp: Any
    num_classes: int
    image_shape: tuple[int, int, int]
    model_name: str
    device: torch.device
    budget: Budget
    teacher: nn.Module | None = None
    teacher_view: str = "x"
    shortcut_region: str = ""  # what a granted mask outlines: "mask" (the shortcut), "outside_mask" (the object)
    create_model: Callable[[], nn.Module] | None = None
    train: BudgetedSplit | None = None
    val: BudgetedSplit | None = None


class Method:
    """Base class with the common pieces (one SGD optimiser, CE validation loss, state dicts)."""

    Hparams: ClassVar[type] = TrainHparams
    protocols: ClassVar[dict[str, dict[str, Any]]] = {}  # protocol name → hyper-parameter overrides
    requires: ClassVar[frozenset[str]] = frozenset({"labels"})
    is_teacher: ClassVar[bool] = False  # trains the teacher artifact (uses the protocol's teacher model)
    train_views: tuple[str, ...] = ("x",)  # views in a training batch besides x (e.g. "x_debiased")
    graph_capturable: ClassVar[bool] = False  # the whole step may be captured as one CUDA graph
    # False where the method schedules its own learning rates (its stages or a warm-up): no lr_milestones
    step_schedule: ClassVar[bool] = True
    # hyper-parameters ``perf`` sets so that it times the method's own step, not a warm-up stage's
    perf_hparams: ClassVar[dict[str, Any]] = {}
    # what the method infers for itself instead of being granted it (e.g. "groups": a partition of the training
    # set found from labels alone), shown beside its budget
    infers: ClassVar[str] = ""
    registry_name: ClassVar[str] = ""

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.hp = ctx.hp
        self.device = ctx.device
        self.model: nn.Module = nn.Identity()
        self.optimizer: torch.optim.Optimizer | None = None

    # --- to implement -------------------------------------------------------------------------
    def build(self) -> None:
        """Default: one network trained by ``sgd`` on all its parameters."""
        self.model = self.new_model()
        self.optimizer = self.sgd(self.model.parameters())
        self.params = self.trainable()

    def step(self, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        return self.model(x)

    def predictor(self) -> nn.Module:
        """The network ``predict`` runs, as a plain module: what checkpoints keep and explanations explain.
        Override when ``predict`` is more than ``self.model`` (e.g. masked weights)."""
        return self.model

    def val_loss(self, batch: Batch) -> Tensor:
        """Mean validation objective on ``batch`` (eval mode, no grad). Default: cross-entropy."""
        return F.cross_entropy(self.predict(batch.x), batch.y)

    def selectable(self) -> bool:
        """Whether the epoch just trained may be chosen by a selection rule (e.g. not a stage whose network
        is not yet the method's predictor). Evaluated by the runner after each epoch."""
        return True

    def mined_minority(self) -> Tensor | None:
        """For a method that infers the bias from labels alone: the training samples it currently treats as the
        minority (bias-conflicting), one bool per sample of the training split in its order; None before it has
        inferred them, and for every other method. The runner scores it against the dataset's groups, which the
        method never sees (``bench.metrics.mining_metrics``)."""
        return None

    def epoch_metrics(self) -> dict[str, float]:
        """Method-specific numbers recorded with each evaluated epoch (eval mode, no grad), computed only from
        what the budget grants (e.g. the ``val`` view). Default: none."""
        return {}

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the runner before every epoch (0-based; also the first epoch after a resume): a place for
        schedules and whole-training-set work. State it changes must be in ``state_dict``."""

    # --- shared helpers -----------------------------------------------------------------------
    def new_model(self) -> nn.Module:
        """A fresh network of the run's model; with ``init_from_teacher``, a copy of the teacher's parameters and
        buffers (the teacher must be of the same architecture)."""
        assert self.ctx.create_model is not None
        model = self.ctx.create_model().to(self.device)
        if self.hp.init_from_teacher:
            assert self.ctx.teacher is not None
            try:
                model.load_state_dict(self.ctx.teacher.state_dict())
            except RuntimeError as err:
                raise UserError("init_from_teacher needs a teacher of the student's architecture (the same "
                                f"--model for both): {str(err).splitlines()[0]}") from None
        return model

    def sgd(self, params: Any) -> torch.optim.Optimizer:
        hp = self.hp
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers the step schedule (``lr_milestones``) scales. Default: ``self.optimizer``."""
        return [self.optimizer] if self.optimizer is not None else []

    def apply_lr_schedule(self, epoch: int) -> None:
        """Set each scheduled optimizer's learning rates for 0-based ``epoch`` from the rates it was built with
        (kept in its param groups as ``initial_lr``, so a resumed run continues the same schedule)."""
        if not self.hp.lr_milestones:
            return
        factor = self.hp.lr_gamma ** sum(epoch >= m for m in self.hp.lr_milestones)
        for optimizer in self.scheduled_optimizers():
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor

    def descend(self, logs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Backward of ``logs["loss"]`` and one clipped step of ``self.optimizer`` (its gradients zeroed by the
        caller before the forward); returns the logs detached, with the pre-clip gradient norm."""
        assert self.optimizer is not None
        logs["loss"].backward()
        out = {k: v.detach() for k, v in logs.items()}
        out["grad_norm"] = self.clip_and_step(self.optimizer, self.params)
        return out

    def clip_and_step(self, optimizer: torch.optim.Optimizer, params: list[Tensor]) -> Tensor:
        """Clip the gradient norm (no host sync) and step; returns the pre-clip norm."""
        if self.hp.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.hp.grad_clip, foreach=True)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        optimizer.step()
        return norm

    def trainable(self, module: nn.Module | None = None) -> list[Tensor]:
        return [p for p in (module or self.model).parameters() if p.requires_grad]

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"model": self.model.state_dict()}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


class TeacherStudentMethod(Method):
    """A method trained against the frozen teacher artifact (``requires`` has "teacher"): the teacher is
    ``self.teacher`` and is fed its view of each batch (``dataset.teacher_view``) via ``teacher_input``."""

    requires: ClassVar[frozenset[str]] = frozenset({"teacher"})

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        if ctx.teacher is None:
            raise ValueError(f"{type(self).__name__} needs the teacher; the runner provides it")
        self.teacher: nn.Module = ctx.teacher
        self.train_views = tuple(dict.fromkeys(("x", ctx.teacher_view)))

    def teacher_input(self, batch: Batch) -> Tensor:
        return batch.view(self.ctx.teacher_view)

    def teacher_logits(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self.teacher(self.teacher_input(batch))


METHODS: Registry[type[Method]] = Registry("method", loader=lambda: import_all_modules("methods"))


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def decorator(cls: type[Method]) -> type[Method]:
        unknown = set(cls.requires) - set(SUPERVISION)
        if unknown:
            raise ValueError(f"method {name}: unknown supervision {sorted(unknown)}; valid: {SUPERVISION}")
        return METHODS.register(name)(cls)

    return decorator


def relevant_region(mask: Tensor, shortcut_region: str) -> Tensor:
    """Where a mask-guided method should find the label's evidence, as a float B×1×H×W map in {0, 1}: the mask
    where it outlines the object (the shortcut is outside it), its complement where it outlines the shortcut."""
    if shortcut_region == "outside_mask":
        return mask.to(torch.float32)
    if shortcut_region == "mask":
        return 1.0 - mask.to(torch.float32)
    raise UserError("this method needs masks that locate the shortcut (a dataset with shortcut_region 'mask' or "
                    "'outside_mask', e.g. objects_on_scenes, mnist_background, dogs_with_ties)")


def list_methods() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


def create_method(name: str, ctx: MethodContext) -> Method:
    """Instantiate and build method ``name``."""
    method = get_method(name)(ctx)
    method.build()
    return method


def method_budget(method_cls: type[Method], dataset: BiasedDataset) -> Budget:
    """The fields of ``dataset`` a run of ``method_cls`` may read (its ``requires``; see ``GRANTED_BY``)."""
    return Budget.of(method_cls.registry_name, method_cls.requires, dataset.teacher_view)


def build_method(method_cls: type[Method], hp: Any, dataset: BiasedDataset, model_name: str,
                 device: torch.device, teacher: nn.Module | None) -> Method:
    """Instantiate and build a method for ``dataset`` on ``device``; it gets budgeted views of the training
    and selection splits and nothing else of the dataset."""
    from bench.models import create_model

    num_classes, shape = dataset.num_classes, dataset.image_shape
    budget = method_budget(method_cls, dataset)
    views = tuple(dict.fromkeys(("x", *method_cls.train_views, *(("x_debiased",) if teacher is not None and
                                                                  dataset.teacher_view == "x_debiased" else ()))))
    ctx = MethodContext(
        hp=hp, num_classes=num_classes, image_shape=shape, model_name=model_name, device=device, budget=budget,
        teacher=teacher, teacher_view=dataset.teacher_view, shortcut_region=dataset.shortcut_region,
        create_model=lambda: create_model(model_name, num_classes, shape[0]),
        train=BudgetedSplit(dataset.splits["train"], budget, views),
        val=BudgetedSplit(dataset.splits[dataset.roles.selection], budget, views),
    )
    return create_method(method_cls.registry_name, ctx)


def resolve_hparams(method: type[Method], protocol: str, overrides: dict[str, Any] | None = None) -> Any:
    """Paper defaults, then the method's per-protocol overrides, then the user's overrides."""
    values = dict(method.protocols.get(protocol, {}))
    values.update(overrides or {})
    hp = build_dataclass(method.Hparams, values, f"{method.registry_name} hyper-parameter")
    if hp.init_from_teacher and "teacher" not in method.requires:
        raise UserError(f"{method.registry_name} has no teacher; init_from_teacher applies to teacher-student methods "
                        "only (leave it out)")
    if getattr(hp, "lr_milestones", ()) and not method.step_schedule:
        raise UserError(f"{method.registry_name} schedules its own learning rates; lr_milestones does not apply "
                        "to it (leave it out)")
    return hp


def hparams_dict(hp: Any) -> dict[str, Any]:
    values = dataclasses.asdict(hp)
    for key, default in LATER_OPTIONS.items():
        if key in values and values[key] == default:
            del values[key]
    if "lr_milestones" in values:
        values["lr_milestones"] = list(values["lr_milestones"])
    return values


def supervision_budget(method: str, teacher_method: str | None = None) -> list[str]:
    """What a run of ``method`` uses, in ``SUPERVISION`` order; what it infers for itself follows as
    ``inferred:<what>``, a teacher's own needs as ``teacher:<item>`` (a distilled student inherits the supervision
    its teacher was trained with)."""
    cls = get_method(method)
    own = set(cls.requires)
    items = [s for s in SUPERVISION if s in own] + ([f"inferred:{cls.infers}"] if cls.infers else [])
    if "teacher" in own and teacher_method:
        inherited = set(get_method(teacher_method).requires)
        items += [f"teacher:{s}" for s in SUPERVISION if s in inherited]
    return items


def check_supervision(method: type[Method], available: set[str]) -> None:
    missing = sorted(set(method.requires) - available)
    if missing:
        raise UserError(f"method {method.registry_name!r} needs {', '.join(missing)}, "
                        "which this dataset does not provide")
