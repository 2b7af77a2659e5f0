"""The runner: executes one run end to end (data on the device, training epochs, evaluation of every
split, selection rules, atomic checkpoints, resume, divergence detection, cost accounting)."""
from __future__ import annotations

import contextlib
import fcntl
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bench.atomic import atomic_torch_save
from bench.data import Batch, BiasedDataset, load_dataset
from bench.errors import UserError
from bench.explain_eval import ExplanationProbe
from bench.method import (
    Method,
    MethodContext,
    check_supervision,
    create_method,
    get_method,
    resolve_hparams,
    supervision_budget,
)
from bench.metrics import evaluate, predict_split
from bench.models import create_model
from bench.protocols import get_protocol
from bench.provenance import provenance
from bench.runs import RunConfig
from bench.store import Store


class RunDiverged(RuntimeError):
    """A loss became NaN or infinite."""


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r}; use cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def execute(cfg: RunConfig, store: Store, device: torch.device, progress: bool = True,
            retry_failed: bool = False) -> dict[str, Any]:
    """Run ``cfg`` unless it is finished; resume it from its last checkpoint if it was interrupted."""
    record = store.ensure_run(cfg.run_id, cfg.to_dict())
    if record["status"] == "finished" or (record["status"] == "failed" and not retry_failed):
        return record
    teacher = load_teacher(cfg.teacher, store, device, progress) if cfg.teacher else None
    with run_lock(store.run_dir(cfg.run_id)) as owned:
        if not owned:
            print(f"run {cfg.run_id} is being run by another process; skipping it", file=sys.stderr)
            return store.get(cfg.run_id) or record
        record = store.get(cfg.run_id) or record
        if record["status"] == "finished":  # finished by another process while we waited for the teacher
            return record
        store.mark_running(cfg.run_id)
        try:
            final, cost = _Training(cfg, store, device, teacher, progress).run()
        except RunDiverged as err:
            store.fail(cfg.run_id, str(err))
            print(f"run {cfg.run_id} failed: {err}", file=sys.stderr)
            return store.get(cfg.run_id) or record
        teacher_method = cfg.teacher["method"] if cfg.teacher else None
        store.finish(cfg.run_id, final, cost,
                     {**provenance(device), "supervision": supervision_budget(cfg.method, teacher_method)})
    return store.get(cfg.run_id) or record


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on ``run_dir`` (released by the OS if the process dies)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_teacher(teacher_cfg: dict[str, Any], store: Store, device: torch.device, progress: bool) -> nn.Module:
    """The frozen teacher artifact: trained once per config (cached in the store), then reused."""
    cfg = RunConfig.from_dict(teacher_cfg)
    state = None
    for _ in range(2):
        record = execute(cfg, store, device, progress)
        if record["status"] != "finished":
            raise UserError(f"teacher run {cfg.run_id} failed ({record.get('error')}); fix it or pick another protocol")
        state = load_checkpoint(store.run_dir(cfg.run_id) / "best.pt", torch.device("cpu"))
        if state is not None:
            break
        print(f"teacher {cfg.run_id} has no usable checkpoint; training it again", file=sys.stderr)
        store.reset(cfg.run_id)
        (store.run_dir(cfg.run_id) / "last.pt").unlink(missing_ok=True)
    if state is None:
        raise UserError(f"teacher checkpoint {store.run_dir(cfg.run_id) / 'best.pt'} cannot be written or read; "
                        "check the disk and the permissions of the results folder")
    model = create_model(cfg.model, state["num_classes"], state["in_channels"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any] | None:
    """A checkpoint this suite wrote (tensors and plain containers only: ``weights_only=True``), or None
    when it is missing or unreadable (truncated, foreign or tampered with)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as err:
        print(f"warning: checkpoint {path} is unreadable ({type(err).__name__}); ignoring it", file=sys.stderr)
        return None


def build_method(method_cls: type[Method], hp: Any, dataset: BiasedDataset, model_name: str,
                 device: torch.device, teacher: nn.Module | None) -> Method:
    """Instantiate and build a method for ``dataset`` on ``device``."""
    num_classes, shape = dataset.num_classes, dataset.image_shape
    ctx = MethodContext(
        hp=hp, num_classes=num_classes, image_shape=shape, model_name=model_name, device=device,
        teacher=teacher, teacher_view=dataset.teacher_view,
        create_model=lambda: create_model(model_name, num_classes, shape[0]), dataset=dataset,
    )
    return create_method(method_cls.registry_name, ctx)


def select_epochs(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Final metrics under every selection rule, from the per-epoch history:
    ``iid_val`` = lowest biased-validation loss (first on ties; the paper's rule), ``last`` = last epoch,
    ``oracle`` = best OOD accuracy (OOD validation split if the dataset has one, else the OOD test split:
    an upper bound, marked as such in every report)."""
    if not history:
        return {}
    chosen = {
        "iid_val": min(history, key=lambda row: row["val_loss"]),
        "last": history[-1],
    }
    oracle_key = "val_ood_acc" if "val_ood_acc" in history[0] else "ood_acc"
    if oracle_key in history[0]:
        chosen["oracle"] = max(history, key=lambda row: row[oracle_key])
    return {rule: dict(row) for rule, row in chosen.items()}


def available_supervision(dataset: BiasedDataset, teacher: bool) -> set[str]:
    train = dataset.splits["train"]
    have = {"labels", "group_labels"}
    if train.mask is not None:
        have.add("masks")
    if train.x_debiased is not None:
        have.add("debiased_view")
    if teacher:
        have.add("teacher")
    return have


@dataclass
class _Progress:
    """Training-time counters that survive a resume."""

    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    train_images: int = 0


class _Training:
    """One run's training loop."""

    def __init__(self, cfg: RunConfig, store: Store, device: torch.device, teacher: nn.Module | None,
                 progress: bool) -> None:
        self.cfg, self.store, self.device, self.show_progress = cfg, store, device, progress
        self.protocol = get_protocol(cfg.protocol)
        self.method_cls = get_method(cfg.method)
        self.hp = resolve_hparams(self.method_cls, cfg.protocol, cfg.hparams)
        self.dataset = load_dataset(cfg.dataset, cfg.dataset_params, cfg.seed, device)
        check_supervision(self.method_cls, available_supervision(self.dataset, teacher is not None))
        self.run_dir = store.run_dir(cfg.run_id)
        self.teacher = teacher
        torch.manual_seed(cfg.seed)
        self.method = build_method(self.method_cls, self.hp, self.dataset, cfg.model, device, teacher)
        self.counters = _Progress()
        self.teacher_preds = self._teacher_predictions()
        self.probe = ExplanationProbe(self.dataset, teacher, view=self._eval_view(),
                                      teacher_view=self.dataset.teacher_view)

    def _eval_view(self) -> str:
        """The view the run's model is measured on: a teacher trained on debiased images sees debiased test
        images where the dataset has them."""
        return "x_debiased" if self.method_cls.is_teacher else "x"

    def _teacher_predictions(self) -> dict[str, Tensor] | None:
        if self.teacher is None:
            return None
        view = self.dataset.teacher_view
        return {name: predict_split(self.teacher, split, self.protocol.eval_batch_size,
                                    view)
                for name, split in self.dataset.splits.items() if name != "train"}

    # --- checkpoints ------------------------------------------------------------------------
    def _resume(self) -> int:
        """Load the last checkpoint; returns the number of completed epochs."""
        state = load_checkpoint(self.run_dir / "last.pt", self.device)
        if state is None:  # a fresh run, or a checkpoint we cannot trust: start from the beginning
            self.store.drop_epochs_after(self.cfg.run_id, 0)
            return 0
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.counters = _Progress(**state["counters"])
        self.store.drop_epochs_after(self.cfg.run_id, state["epoch"])
        return int(state["epoch"])

    def _checkpoint(self, epoch: int, history: list[dict[str, Any]]) -> None:
        if history[-1]["val_loss"] <= min(row["val_loss"] for row in history):
            predictor = self.method.predictor()
            atomic_torch_save({"model": predictor.state_dict(), "epoch": epoch,
                               "num_classes": self.dataset.num_classes, "in_channels": self.dataset.image_shape[0]},
                              self.run_dir / "best.pt")
            atomic_torch_save({"epoch": epoch, **self.probe.gallery(predictor)}, self.run_dir / "explanations.pt")
        state: dict[str, Any] = {"epoch": epoch, "method": self.method.state_dict(), "rng": torch.get_rng_state(),
                                 "counters": vars(self.counters)}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_torch_save(state, self.run_dir / "last.pt")

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, Any], dict[str, Any]]:
        wall_start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = self._resume()
        history = self.store.epochs(self.cfg.run_id)
        step = self._stepper()
        epochs = range(start, self.hp.epochs)
        bar = _progress_bar(epochs, self.cfg.label(), self.show_progress, start, self.hp.epochs)
        for epoch in bar:
            self.method.on_epoch_start(epoch)
            train_logs = self._train_epoch(epoch, step)
            metrics = {**train_logs, **self._evaluate()}
            history.append({"epoch": epoch + 1, **metrics})
            self.store.add_epoch(self.cfg.run_id, epoch + 1, metrics)
            self._checkpoint(epoch + 1, history)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()
                                 if k in ("train_loss", "val_loss", "iid_acc", "ood_acc", "shift_acc")})
        final = select_epochs(history)
        cost = self._cost(time.perf_counter() - wall_start)
        return final, cost

    def _stepper(self) -> Callable[[Batch], dict[str, Tensor]]:
        from bench import cudagraph

        if self.device.type == "cuda" and self.method_cls.graph_capturable and cudagraph.enabled():
            from bench.cudagraph import GraphedStep

            return GraphedStep(self.method.step)
        return self.method.step

    def _train_epoch(self, epoch: int, step: Callable[[Batch], dict[str, Tensor]]) -> dict[str, float]:
        split = self.dataset.splits["train"]
        batch_size = self.hp.batch_size
        steps = len(split) // batch_size  # fixed batch shape (drop the last partial batch): graph-capturable
        if steps == 0:
            raise UserError(f"batch_size {batch_size} is larger than the training split ({len(split)} images)")
        shuffle = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(split), generator=shuffle).to(self.device)
        self.method.train()
        sums: dict[str, Tensor] = {}
        begin = time.perf_counter()
        for i in range(steps):
            logs = step(split.batch(order[i * batch_size:(i + 1) * batch_size], self.method.train_views))
            for key, value in logs.items():
                sums[key] = sums[key] + value.detach() if key in sums else value.detach().clone()
            if (i + 1) % self.protocol.log_every == 0:
                self._check_finite(sums, epoch, i + 1)
        means = self._check_finite(sums, epoch, steps)
        self.counters.train_seconds += time.perf_counter() - begin
        self.counters.train_images += steps * batch_size
        return {f"train_{k}": v / steps for k, v in means.items()}

    def _check_finite(self, sums: dict[str, Tensor], epoch: int, step: int) -> dict[str, float]:
        """The one host sync of a logging interval: fail the run if a logged loss is NaN/inf."""
        values = dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True)) if sums else {}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise RunDiverged(f"non-finite {', '.join(bad)} at epoch {epoch + 1}, by step {step}")
        return values

    def _evaluate(self) -> dict[str, float]:
        begin = time.perf_counter()
        self.method.eval()
        splits = [s for s in self.dataset.splits if s != "train"]
        with torch.no_grad():
            metrics = evaluate(self.method.predict, self.dataset, self.protocol.eval_batch_size, splits,
                               self.teacher_preds, view=self._eval_view())
            metrics["val_loss"] = self._val_loss()
        metrics.update(self.probe.metrics(self.method.predictor()))
        if not math.isfinite(metrics["val_loss"]):
            raise RunDiverged("non-finite validation loss")
        self.counters.eval_seconds += time.perf_counter() - begin
        return metrics

    def _val_loss(self) -> float:
        split = self.dataset.splits["val"]
        size = self.protocol.eval_batch_size
        total = torch.zeros((), device=self.device)
        for i in range(0, len(split), size):
            index = torch.arange(i, min(i + size, len(split)), device=self.device)
            total += self.method.val_loss(split.batch(index, self.method.train_views)) * len(index)
        return float(total) / len(split)

    def _cost(self, wall_seconds: float) -> dict[str, Any]:
        c = self.counters
        if self.device.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "train_seconds": round(c.train_seconds, 3),
            "eval_seconds": round(c.eval_seconds, 3),
            "wall_seconds": round(wall_seconds, 3),
            "images_per_second": round(c.train_images / max(c.train_seconds, 1e-9), 1),
            "train_images": c.train_images,
            "peak_memory_mb": round(peak_mb, 1),
            "device": str(self.device),
        }


def _progress_bar(epochs: range, label: str, show: bool, start: int, total: int) -> Any:
    if not show:
        return epochs
    from tqdm import tqdm

    return tqdm(epochs, desc=label, initial=start, total=total, unit="epoch", leave=False, dynamic_ncols=True,
                file=sys.stderr)

