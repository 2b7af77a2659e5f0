"""Throughput on the current device (``run_bench.py perf``): each method's training step, and the
explanation-training step (student forward + its heatmap with ``create_graph`` + the teacher's heatmap
+ a heatmap loss + backward + SGD) for each explanation method.

Timings use CUDA events on the GPU (after warm-up; the whole step as a CUDA graph where the method
allows it) and ``time.perf_counter`` on the CPU. Teachers are randomly initialised models of the
protocol's teacher architecture: throughput does not depend on their weights.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.data import Batch, BiasedDataset, load_dataset
from bench.errors import UserError
from bench.method import build_method, get_method, list_methods, resolve_hparams
from bench.models import create_model
from bench.protocols import get_protocol

Step = Callable[[Batch], object]
MAX_BATCH_SIZE = 1_000_000  # as for training (TrainHparams)


@dataclass
class PerfResult:
    name: str
    model: str
    batch_size: int
    images_per_second: float
    ms_per_step: float
    cuda_graph: bool
    peak_memory_mb: float | None


def time_steps(step: Step, batches: list[Batch], device: torch.device, steps: int,
               warmup: int = 5) -> tuple[float, float | None]:
    """(seconds for ``steps`` steps after ``warmup`` untimed ones, peak GPU memory in MB or None)."""
    for i in range(warmup):
        step(batches[i % len(batches)])
    if device.type != "cuda":
        begin = time.perf_counter()
        for i in range(steps):
            step(batches[i % len(batches)])
        return time.perf_counter() - begin, None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(steps):
        step(batches[i % len(batches)])
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / 1000, torch.cuda.max_memory_allocated(device) / 2**20


def _batches(dataset: BiasedDataset, batch_size: int, device: torch.device, views: tuple[str, ...]) -> list[Batch]:
    split = dataset.splits["train"]
    return [split.batch(torch.arange(i * batch_size, (i + 1) * batch_size, device=device), views) for i in range(4)]


def measure(method_name: str, dataset: BiasedDataset, protocol: str, device: torch.device,
            steps: int = 20, batch_size: int | None = None, hparams: dict[str, Any] | None = None,
            model: str | None = None, teacher_model: str | None = None) -> PerfResult:
    """Images/s of one registered method's training step; ``hparams`` (default: the method's settings for
    timing) and the models (default: the protocol's) as a run would set them."""
    method_cls = get_method(method_name)
    overrides = method_cls.perf_hparams if hparams is None else hparams
    hp = resolve_hparams(method_cls, protocol, {**overrides, **({"batch_size": batch_size} if batch_size else {})})
    proto = get_protocol(protocol)
    model = model or (proto.teacher_model if method_cls.is_teacher else proto.model)
    teacher = None
    if "teacher" in method_cls.requires:
        teacher = create_model(teacher_model or proto.teacher_model, dataset.num_classes,
                               dataset.image_shape[0]).to(device).eval()
        teacher.requires_grad_(False)
    method = build_method(method_cls, hp, dataset, model, device, teacher)
    method.train()
    step: Step = method.step
    graphed = device.type == "cuda" and method_cls.graph_capturable
    if graphed:
        from bench.cudagraph import GraphedStep

        step = GraphedStep(method.step)
    seconds, peak = time_steps(step, _batches(dataset, hp.batch_size, device, method.train_views), device, steps)
    return PerfResult(method_name, model, hp.batch_size, steps * hp.batch_size / seconds, 1000 * seconds / steps,
                      graphed, peak)


def measure_explanation(explanation: str, dataset: BiasedDataset, protocol: str, device: torch.device,
                        steps: int = 20, batch_size: int = 128) -> PerfResult:
    """Images/s of an explanation-distillation step: teacher map (no graph), student map (create_graph),
    L1 between them, backward and an SGD step. The distillation losses of the papers come with the
    distillation methods; L1 has the same cost profile."""
    from bench.explain import explain

    proto = get_protocol(protocol)
    channels = dataset.image_shape[0]
    student = create_model(proto.model, dataset.num_classes, channels).to(device).train()
    teacher = create_model(proto.teacher_model, dataset.num_classes, channels).to(device).train()
    teacher.requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
    eps = torch.full((batch_size,), 0.05, device=device)

    def step(batch: Batch) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        target = batch.y
        teacher_map = explain(teacher, batch.x, target, explanation, eps=eps)
        student_map = explain(student, batch.x, target, explanation, eps=eps, create_graph=True)
        loss = F.l1_loss(student_map, teacher_map)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0, foreach=True)
        optimizer.step()
        return loss.detach()

    seconds, peak = time_steps(step, _batches(dataset, batch_size, device, ("x",)), device, steps)
    return PerfResult(f"explain:{explanation}", f"{proto.model}/{proto.teacher_model}", batch_size,
                      steps * batch_size / seconds, 1000 * seconds / steps, False, peak)


MASKED_DATASET = "mnist_background"


def run_perf(methods: list[str] | None, protocol: str, device: torch.device, steps: int,
             batch_size: int | None = None, dataset_name: str = "coloured_mnist",
             explanations: list[str] | None = None) -> list[PerfResult]:
    if batch_size is not None and not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise UserError(f"--batch-size must be from 1 to {MAX_BATCH_SIZE}, got {batch_size}")
    dataset = load_dataset(dataset_name, get_protocol(protocol).dataset_options(dataset_name), 0, device)
    most = len(dataset.splits["train"]) // 4  # the steps cycle through 4 distinct batches
    if batch_size is not None and batch_size > most:
        raise UserError(f"--batch-size {batch_size} is more than a quarter of the training split; pass at most {most}")
    student = get_protocol(protocol).model
    if explanations is None:  # every explainer that applies to the protocol's models
        from bench.explain import list_explainers

        explanations = [e for e in list_explainers() if applies(e, student)]
    for name in explanations:
        if not applies(name, student):
            raise UserError(f"explanation {name!r} needs a B-cos model, and protocol {protocol!r} trains {student}; "
                            "leave it out of --explanations")
    masked = None  # the mask-guided methods are timed on MNIST with background bias (same size, with masks)

    def data_for(method: str) -> BiasedDataset:
        nonlocal masked
        if "masks" not in get_method(method).requires or dataset.splits["train"].mask is not None:
            return dataset
        if masked is None:
            masked = load_dataset(MASKED_DATASET, get_protocol(protocol).dataset_options(MASKED_DATASET), 0, device)
        return masked

    results = [measure(m, data_for(m), protocol, device, steps, batch_size) for m in methods or list_methods()]
    results += [measure_explanation(e, dataset, protocol, device, steps, batch_size or 128) for e in explanations]
    return results


def applies(explanation: str, model: str) -> bool:
    """Whether ``explanation`` can explain zoo model ``model`` (B-cos maps exist for B-cos networks only)."""
    return explanation != "bcos" or model.startswith("bcos_")


def format_results(results: list[PerfResult], device_label: str, protocol: str) -> str:
    """The table; ``× ERM``: the step's time over a plain ERM step at the same batch size (the cost a method
    adds to training, e.g. a relevance pass and a double backward for explanation distillation)."""
    baseline = next((r for r in results if r.name == "erm"), None)
    lines = [f"perf on {device_label}, protocol {protocol} (train step incl. optimiser; images/s higher is better)",
             f"{'step':<26}{'model':<22}{'batch':>6}{'images/s':>12}{'ms/step':>10}{'× ERM':>8}{'graph':>7}"
             f"{'peak MB':>10}"]
    for r in results:
        peak = "-" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}"
        lines.append(f"{r.name:<26}{r.model:<22}{r.batch_size:>6}{r.images_per_second:>12,.0f}"
                     f"{r.ms_per_step:>10.2f}{relative_cost(r, baseline):>8}{'yes' if r.cuda_graph else 'no':>7}"
                     f"{peak:>10}")
    if baseline is not None and any(r.name.startswith("explain:") for r in results):
        ratios = ", ".join(f"{r.name[8:]} {relative_cost(r, baseline)}"
                           for r in results if r.name.startswith("explain:"))
        lines.append(f"cost of an explanation step relative to a plain ERM step: {ratios}")
    return "\n".join(lines)


def relative_cost(result: PerfResult, baseline: PerfResult | None) -> str:
    if baseline is None or result.batch_size != baseline.batch_size:
        return "-"
    return f"{result.ms_per_step / baseline.ms_per_step:.1f}×"
