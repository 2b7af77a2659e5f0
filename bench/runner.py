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

from bench.artifacts import GALLERY_FILE, load_checkpoint, save_gallery, state_digest
from bench.atomic import atomic_torch_save
from bench.augment import AUGMENTATIONS
from bench.data import Batch, BiasedDataset, audit_reads, content_digest, load_dataset
from bench.errors import UserError
from bench.fingerprint import changed_parts, code_fingerprint
from bench.heatmaps import ExplanationProbe, eval_view
from bench.method import Method, build_method, check_supervision, get_method, resolve_hparams, supervision_budget
from bench.metrics import (
    conflicting_samples,
    eval_batch_size,
    evaluate,
    mining_metrics,
    predict_splits,
    predict_with_loss,
)
from bench.models import create_model
from bench.protocols import get_protocol
from bench.provenance import provenance
from bench.runs import RunConfig
from bench.selection import DEFAULT_RULE, SELECTION_RULES, ValidationChoices, select_epochs, selection_meta
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


class RunFailed(RuntimeError):
    """A run (or the teacher it depends on) failed; its record says why."""


def execute(cfg: RunConfig, store: Store, device: torch.device, progress: bool = True,
            retry_failed: bool = False, reuse_stale: bool = False, prepared: Prepared | None = None) -> dict[str, Any]:
    """Run ``cfg`` unless it is finished with the current code; resume it from its last checkpoint if it was
    interrupted. A finished run whose code changed (stale) is re-run from scratch unless ``reuse_stale``;
    a failed one is retried only with ``retry_failed``.

    Everything that can be checked before training (dataset, supervision, batch size) is checked before the
    store is touched: a bad input raises ``UserError`` and writes nothing (a caller that must not even create
    the store checks first with ``Prepared(cfg, device)`` and passes it in). Any exception after the run
    starts marks it ``failed`` with the reason (an interruption leaves it resumable)."""
    code = code_fingerprint(cfg.to_dict())
    existing = store.get(cfg.run_id)
    if existing is not None and _keep(existing, code, retry_failed, reuse_stale):
        return existing
    prepared = prepared or Prepared(cfg, device)
    teacher = load_teacher(cfg.teacher, store, device, progress, reuse_stale) if cfg.teacher else None
    store.ensure_run(cfg.run_id, cfg.to_dict())
    with run_lock(store.run_dir(cfg.run_id), wait=False) as owned:
        if not owned:
            print(f"run {cfg.run_id} is being run by another process; skipping it", file=sys.stderr)
            return store.get(cfg.run_id)  # type: ignore[return-value]
        record = store.get(cfg.run_id)
        assert record is not None
        done = record["status"] == "finished" and record["code"] == code
        if done or (record["status"] == "failed" and not retry_failed):  # settled by another process meanwhile
            return record
        if record["status"] == "finished" or (record["code"] and record["code"] != code):
            _restart(store, cfg.run_id)  # stale results or checkpoints of other code: start again
        store.mark_running(cfg.run_id, code)
        try:
            training = _Training(cfg, prepared, store, device, teacher, progress)
            final, cost = training.run()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # noqa: B036 - any failure must be recorded, then the sweep goes on
            reason = str(err) if isinstance(err, (RunDiverged, UserError)) else f"{type(err).__name__}: {err}"
            store.fail(cfg.run_id, reason)
            print(f"run {cfg.run_id} failed: {reason}", file=sys.stderr)
            return store.get(cfg.run_id)  # type: ignore[return-value]
        store.finish(cfg.run_id, final, cost, provenance(device), training.meta())
    return store.get(cfg.run_id)  # type: ignore[return-value]


def settled(record: dict[str, Any] | None, cfg: RunConfig, retry_failed: bool, reuse_stale: bool,
            quiet: bool = False) -> bool:
    """Whether ``execute`` would return ``record`` as it is (nothing to run for ``cfg``)."""
    return record is not None and _keep(record, code_fingerprint(cfg.to_dict()), retry_failed, reuse_stale, quiet)


def _keep(record: dict[str, Any], code: dict[str, Any], retry_failed: bool, reuse_stale: bool,
          quiet: bool = False) -> bool:
    """Whether an existing record is the answer as it is (and says so when it is stale, unless ``quiet``)."""
    if record["status"] == "failed":
        return not retry_failed
    if record["status"] != "finished":
        return False
    if record.get("code") == code:
        return True
    parts = ", ".join(changed_parts(record.get("code"), code))
    if quiet:
        return reuse_stale
    if reuse_stale:
        print(f"run {record['run_id']} is stale (code changed: {parts}); reusing it as asked (--reuse-stale)",
              file=sys.stderr)
        return True
    print(f"run {record['run_id']} is stale (code changed: {parts}); running it again", file=sys.stderr)
    return False


def _restart(store: Store, run_id: str) -> None:
    store.reset(run_id)
    for name in ("last.pt", "best.pt", GALLERY_FILE):
        (store.run_dir(run_id) / name).unlink(missing_ok=True)
    for path in (store.run_dir(run_id) / "candidates").glob("*.pt"):
        path.unlink()


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on ``run_dir`` (released by the OS if the process dies); ``wait``: block until the
    holder releases it, else yield False at once when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state (names, shapes and bytes): which teacher exactly a student learnt from."""
    return state_digest(model.state_dict())


def load_teacher(teacher_cfg: dict[str, Any], store: Store, device: torch.device, progress: bool,
                 reuse_stale: bool = False) -> nn.Module:
    """The frozen teacher artifact: trained once per config (cached in the store), then reused; a stale one is
    kept when the student's run keeps stale runs (``reuse_stale``). A teacher that another process is training is
    waited for; a failed teacher raises ``RunFailed``."""
    cfg = RunConfig.from_dict(teacher_cfg)
    state = None
    for _ in range(2):
        record = execute(cfg, store, device, progress, reuse_stale=reuse_stale)
        if record["status"] == "running":  # trained by another process: wait for its lock, then look again
            with run_lock(store.run_dir(cfg.run_id), wait=True):
                pass
            record = execute(cfg, store, device, progress, reuse_stale=reuse_stale)
        if record["status"] != "finished":
            raise RunFailed(f"its teacher run {cfg.run_id} failed ({record.get('error')})")
        state = load_checkpoint(store.run_dir(cfg.run_id) / "best.pt", torch.device("cpu"))
        if state is not None:
            break
        print(f"teacher {cfg.run_id} has no usable checkpoint; training it again", file=sys.stderr)
        _restart(store, cfg.run_id)
    if state is None:
        raise UserError(f"teacher checkpoint {store.run_dir(cfg.run_id) / 'best.pt'} cannot be written or read; "
                        "check the disk and the permissions of the results folder")
    model = create_model(cfg.model, state["num_classes"], state["in_channels"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def available_supervision(dataset: BiasedDataset, teacher: bool) -> set[str]:
    train = dataset.splits["train"]
    have = {"labels", "group_labels", "bias_labels"}
    if train.mask is not None:
        have.add("masks")
    if train.x_debiased is not None:
        have.add("debiased_view")
    if teacher:
        have.add("teacher")
    return have


class Prepared:
    """What a run needs before it may touch the store, checked: hyper-parameters, the dataset, the method's
    supervision against what the dataset provides, the batch size against the training split."""

    def __init__(self, cfg: RunConfig, device: torch.device) -> None:
        self.protocol = get_protocol(cfg.protocol)
        self.method_cls = get_method(cfg.method)
        self.hp = resolve_hparams(self.method_cls, cfg.protocol, cfg.hparams)
        self.dataset = load_dataset(cfg.dataset, cfg.dataset_params, cfg.seed, device)
        check_supervision(self.method_cls, available_supervision(self.dataset, cfg.teacher is not None))
        train = len(self.dataset.splits["train"])
        if self.hp.batch_size > train:
            raise UserError(f"batch_size {self.hp.batch_size} is larger than the training split ({train} images); "
                            "pass a smaller --hp batch_size or a larger --data train_size")


@dataclass
class _Progress:
    """Training-time counters that survive a resume."""

    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    wall_seconds: float = 0.0  # over every attempt of the run (a resumed run counts its earlier attempts)
    train_images: int = 0
    attempts: int = 0


class _Training:
    """One run's training loop."""

    def __init__(self, cfg: RunConfig, prepared: Prepared, store: Store, device: torch.device,
                 teacher: nn.Module | None, progress: bool) -> None:
        self.cfg, self.store, self.device, self.show_progress = cfg, store, device, progress
        self.protocol, self.method_cls, self.hp = prepared.protocol, prepared.method_cls, prepared.hp
        self.dataset = prepared.dataset
        self.roles = self.dataset.roles
        self.run_dir = store.run_dir(cfg.run_id)
        self.teacher = teacher
        torch.manual_seed(cfg.seed)
        self.method = build_method(self.method_cls, self.hp, self.dataset, cfg.model, device, teacher)
        self.budget = self.method.ctx.budget
        self.reads: set[str] = set()
        self.counters = _Progress()
        self.eval_batch = eval_batch_size(self.protocol.eval_batch_size, device,
                                          tuple(self.dataset.splits["train"].x.shape))
        self.teacher_preds = self._teacher_predictions()
        self.data_digest = content_digest(self.dataset)
        self.train_conflicting = conflicting_samples(self.dataset.splits["train"], self.roles)
        self.probe = ExplanationProbe(self.dataset, teacher, view=self._eval_view(),
                                      teacher_view=self.dataset.teacher_view, batch_size=min(128, self.eval_batch))
        self.rule = SELECTION_RULES.get(DEFAULT_RULE)

    def meta(self) -> dict[str, Any]:
        """What the record says about how its numbers came about: split roles, the rules' targets, the budget
        the method was granted and the fields it actually read."""
        teacher_method = self.cfg.teacher["method"] if self.cfg.teacher else None
        return {
            "roles": self.roles.to_dict(),
            "is_teacher": self.method_cls.is_teacher,
            "selection": selection_meta(self.roles, self.dataset.eval_splits),
            "checkpoint_rule": self.rule.name,
            "supervision": supervision_budget(self.cfg.method, teacher_method),
            "granted_fields": sorted(self.budget.fields),
            "read_fields": sorted(self.reads),
            "group_names": {str(k): v for k, v in self.dataset.group_names.items()},
            "split_descriptions": self.dataset.split_descriptions,
            "explainer": self.probe.explainer,
            "data_sha256": self.data_digest,
            **({"teacher_sha256": weights_digest(self.teacher)} if self.teacher is not None else {}),
        }

    def _eval_view(self) -> str:
        return eval_view(self.method_cls.is_teacher)

    def _teacher_predictions(self) -> dict[str, Tensor] | None:
        if self.teacher is None:
            return None
        view = self.dataset.teacher_view
        return predict_splits(self.teacher, self.dataset, self.dataset.eval_splits, self.eval_batch, view)

    # --- checkpoints ------------------------------------------------------------------------
    def _resume(self) -> int:
        """Load the last checkpoint; returns the number of completed epochs."""
        state = load_checkpoint(self.run_dir / "last.pt", self.device)
        if state is not None and self._untested_choices_lost(int(state["epoch"])):
            print(f"warning: run {self.cfg.run_id} lost the kept state of an epoch it must still test; training it "
                  "again from the start", file=sys.stderr)
            state = None
        if state is None:  # a fresh run, or a checkpoint we cannot trust: start from the beginning
            self.store.drop_epochs_after(self.cfg.run_id, 0)
            self._drop_candidates(set())
            return 0
        self.method.load_state_dict(state["method"])
        torch.set_rng_state(state["rng"].cpu())
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.counters = _Progress(**{**vars(_Progress()), **state["counters"]})
        self.store.drop_epochs_after(self.cfg.run_id, state["epoch"])
        self._drop_candidates(set(range(1, int(state["epoch"]) + 1)))
        return int(state["epoch"])

    def _untested_choices_lost(self, epochs_done: int) -> bool:
        history = [row for row in self.store.epochs(self.cfg.run_id) if row["epoch"] <= epochs_done]
        untested = {row["epoch"] for row in history if not self._tested(row)}
        chosen = ValidationChoices(self.roles, self.dataset.eval_splits, history).epochs()
        return any(not self._candidate(epoch).exists() for epoch in chosen & untested)

    def _checkpoint(self, epoch: int, history: list[dict[str, Any]]) -> None:
        """``last.pt`` always; ``best.pt`` (and the gallery of its network) when the checkpoint rule now
        chooses this epoch: the kept network is the one whose metrics the rule reports."""
        chosen = self.choices.chosen(self.rule.name) if self.rule.name in self.choices.rules else \
            self.rule.choose(history, self.roles)
        if chosen is not None and chosen["epoch"] == epoch:
            predictor = self.method.predictor()
            atomic_torch_save({"model": predictor.state_dict(), "epoch": epoch, "rule": self.rule.name,
                               "num_classes": self.dataset.num_classes, "in_channels": self.dataset.image_shape[0]},
                              self.run_dir / "best.pt")
            gallery = self.probe.gallery(predictor)
            if gallery:
                save_gallery(self.run_dir / GALLERY_FILE, {"epoch": epoch, **gallery})
        self.counters.wall_seconds += time.perf_counter() - self.attempt_start
        self.attempt_start = time.perf_counter()
        state: dict[str, Any] = {"epoch": epoch, "method": self.method.state_dict(), "rng": torch.get_rng_state(),
                                 "counters": vars(self.counters)}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_torch_save(state, self.run_dir / "last.pt")

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, Any], dict[str, Any]]:
        with audit_reads() as self.reads:
            return self._run()

    def _run(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.attempt_start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = self._resume()
        self.counters.attempts += 1
        history = self.store.epochs(self.cfg.run_id)
        self.choices = ValidationChoices(self.roles, self.dataset.eval_splits, history)
        step = self._stepper()
        epochs = range(start, self.hp.epochs)
        bar = _progress_bar(epochs, self.cfg.label(), self.show_progress, start, self.hp.epochs)
        for epoch in bar:
            self.method.apply_lr_schedule(epoch)
            self.method.on_epoch_start(epoch)
            train_logs = self._train_epoch(epoch, step)
            metrics = {**train_logs, **self._evaluate(epoch, history)}
            history.append({"epoch": epoch + 1, **metrics})
            self.store.add_epoch(self.cfg.run_id, epoch + 1, metrics)
            self.choices.add(history[-1])
            self._drop_candidates(self.choices.epochs())
            self._checkpoint(epoch + 1, history)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()
                                 if k in ("train_loss", "val_loss", "iid_acc", "ood_acc", "shift_acc")})
        self._test_choices(history)
        final = select_epochs(history, self.roles)
        self.counters.wall_seconds += time.perf_counter() - self.attempt_start
        return final, self._cost()

    def _stepper(self) -> Callable[[Batch], dict[str, Tensor]]:
        from bench import cudagraph

        # a captured step bakes its learning rate in: a step schedule runs eager
        if (self.device.type == "cuda" and self.method_cls.graph_capturable and cudagraph.enabled()
                and not self.hp.lr_milestones):
            from bench.cudagraph import GraphedStep

            return GraphedStep(self.method.step)
        return self.method.step

    def _train_epoch(self, epoch: int, step: Callable[[Batch], dict[str, Tensor]]) -> dict[str, float]:
        split = self.dataset.splits["train"]
        batch_size = self.hp.batch_size
        steps = len(split) // batch_size  # fixed batch shape (drop the last partial batch): graph-capturable
        shuffle = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(split), generator=shuffle).to(self.device)
        augment = AUGMENTATIONS[self.hp.augment]
        self.method.train()
        sums: dict[str, Tensor] = {}
        begin = time.perf_counter()
        for i in range(steps):
            batch = split.batch(order[i * batch_size:(i + 1) * batch_size], self.method.train_views, self.budget)
            logs = step(augment(batch) if augment else batch)
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

    def _evaluate(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The epoch's evaluation at the run's cadence (``TrainHparams.eval_every``, ``test_every``): nothing, the
        validation splits, or the validation and test splits with the explanation probe."""
        last = epoch + 1 == self.hp.epochs
        if not (last or (epoch + 1) % self.hp.eval_every == 0):
            return {"selectable": False}
        begin = time.perf_counter()
        self.method.eval()
        metrics: dict[str, Any] = {**self._measure(list(self.roles.validation)),
                                   "selectable": bool(self.method.selectable())}
        validations = (epoch + 1) // self.hp.eval_every  # this one included (only the last epoch is off the grid)
        if last or validations % self.hp.test_every == 0:
            metrics.update(self._test_metrics())
        elif self.choices.would_choose({"epoch": epoch + 1, **metrics}):
            atomic_torch_save(self.method.state_dict(), self._candidate(epoch + 1))
        self.counters.eval_seconds += time.perf_counter() - begin
        return metrics

    def _test_metrics(self) -> dict[str, float]:
        return {**self._measure(self.dataset.test_splits), **self.probe.metrics(self.method.predictor())}

    # --- epochs tested after training (``test_every`` > 1) -----------------------------------
    def _candidate(self, epoch: int) -> Path:
        """The kept state of an untested epoch that a validation-data rule chooses so far."""
        return self.run_dir / "candidates" / f"epoch-{epoch}.pt"

    def _tested(self, row: dict[str, Any]) -> bool:
        return f"{self.dataset.test_splits[0]}_acc" in row

    def _drop_candidates(self, keep: set[int]) -> None:
        folder = self.run_dir / "candidates"
        for path in folder.glob("epoch-*.pt") if folder.exists() else ():
            if int(path.stem.split("-")[1]) not in keep:
                path.unlink(missing_ok=True)

    def _test_choices(self, history: list[dict[str, Any]]) -> None:
        """Measure the test splits at the epochs the validation-data rules chose and that were not tested, from
        their kept states: every such rule reports the numbers a run tested at every epoch would report."""
        begin = time.perf_counter()
        chosen = self.choices.epochs()
        for row in history:
            if row["epoch"] in chosen and not self._tested(row):
                state = load_checkpoint(self._candidate(row["epoch"]), self.device)
                if state is None:  # unreadable since the resume checked it: the next attempt starts again
                    self._candidate(row["epoch"]).unlink(missing_ok=True)
                    raise RuntimeError(f"the kept state of epoch {row['epoch']} is unreadable; rerun with "
                                       "--retry-failed to train the run again")
                self.method.load_state_dict(state)
                self.method.eval()
                with torch.no_grad():
                    row.update(self._test_metrics())
                self.store.add_epoch(self.cfg.run_id, row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
        self._drop_candidates(set())
        self.counters.eval_seconds += time.perf_counter() - begin

    def _measure(self, splits: list[str]) -> dict[str, float]:
        """Metrics of ``splits``; with the validation splits, the method's validation loss and epoch metrics."""
        with torch.no_grad():
            known: dict[str, Tensor] = {}
            val_loss = self._val_loss(known) if self.roles.selection in splits else None
            metrics = evaluate(self.method.predict, self.dataset, self.eval_batch, splits, self.teacher_preds,
                               view=self._eval_view(), known=known)
            if val_loss is not None:
                metrics["val_loss"] = val_loss
                metrics.update(self.method.epoch_metrics())
                metrics.update(mining_metrics(self.method.mined_minority(), self.train_conflicting))
        if "val_loss" in metrics and not math.isfinite(metrics["val_loss"]):
            raise RunDiverged("non-finite validation loss")
        return metrics

    def _val_loss(self, known: dict[str, Tensor]) -> float:
        """The method's validation objective on the selection split. Where it is the default one (cross-entropy of
        ``predict`` on ``x``) and accuracy is measured on ``x`` too, one pass gives the loss and the predictions,
        which go into ``known``: the split is not forwarded a second time for its accuracy."""
        split = self.dataset.splits[self.roles.selection]
        if type(self.method).val_loss is Method.val_loss and self._eval_view() == "x":
            known[self.roles.selection], loss = predict_with_loss(self.method.predict, split, self.eval_batch)
            return loss
        size = self.protocol.eval_batch_size  # a method's objective may depend on its batch (IRM's penalty)
        total = torch.zeros((), device=self.device)
        for i in range(0, len(split), size):
            index = torch.arange(i, min(i + size, len(split)), device=self.device)
            total += self.method.val_loss(split.batch(index, self.method.train_views, self.budget)) * len(index)
        return float(total) / len(split)

    def _cost(self) -> dict[str, Any]:
        c = self.counters
        if self.device.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "train_seconds": round(c.train_seconds, 3),
            "eval_seconds": round(c.eval_seconds, 3),
            "wall_seconds": round(c.wall_seconds, 3),
            "attempts": c.attempts,
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

