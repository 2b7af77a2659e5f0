"""Throughput of each method's training step on the current device (``run_bench.py perf``).

Timings use CUDA events on the GPU (after warm-up; the whole step as a CUDA graph where the method
allows it) and ``time.perf_counter`` on the CPU. The teacher, when a method needs one, is a randomly
initialised model of the protocol's teacher architecture: throughput does not depend on its weights.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.data import Batch, BiasedDataset, load_dataset
from bench.method import get_method, list_methods, resolve_hparams
from bench.models import create_model
from bench.protocols import get_protocol
from bench.runner import build_method


@dataclass
class PerfResult:
    method: str
    model: str
    batch_size: int
    images_per_second: float
    ms_per_step: float
    cuda_graph: bool
    peak_memory_mb: float | None


def measure(method_name: str, dataset: BiasedDataset, protocol: str, device: torch.device,
            steps: int = 20, warmup: int = 5, batch_size: int | None = None) -> PerfResult:
    method_cls = get_method(method_name)
    hp = resolve_hparams(method_cls, protocol, {"batch_size": batch_size} if batch_size else None, dataset.name)
    proto = get_protocol(protocol)
    model = proto.teacher_model if method_cls.is_teacher else proto.model
    teacher = None
    if "teacher" in method_cls.requires:
        teacher = create_model(proto.teacher_model, dataset.num_classes, dataset.image_shape[0]).to(device).eval()
        teacher.requires_grad_(False)
    method = build_method(method_cls, hp, dataset, model, device, teacher)
    method.train()
    split = dataset.splits["train"]
    batches = [split.batch(torch.arange(i * hp.batch_size, (i + 1) * hp.batch_size, device=device),
                           method.train_views) for i in range(4)]
    step: Callable[[Batch], dict[str, torch.Tensor]] = method.step
    graphed = device.type == "cuda" and method_cls.graph_capturable
    if graphed:
        from bench.cudagraph import GraphedStep

        step = GraphedStep(method.step)
    for i in range(warmup):
        step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(steps):
            step(batches[i % len(batches)])
        end.record()
        torch.cuda.synchronize(device)
        seconds = start.elapsed_time(end) / 1000
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        begin = time.perf_counter()
        for i in range(steps):
            step(batches[i % len(batches)])
        seconds = time.perf_counter() - begin
        peak = None
    return PerfResult(method_name, model, hp.batch_size, steps * hp.batch_size / seconds, 1000 * seconds / steps,
                      graphed, peak)


def run_perf(methods: list[str] | None, protocol: str, device: torch.device, steps: int,
             batch_size: int | None = None, dataset_name: str = "coloured_mnist") -> list[PerfResult]:
    dataset = load_dataset(dataset_name, get_protocol(protocol).dataset_options(dataset_name), 0, device)
    return [measure(m, dataset, protocol, device, steps, batch_size=batch_size) for m in methods or list_methods()]


def format_results(results: list[PerfResult], device_label: str, protocol: str) -> str:
    lines = [f"perf on {device_label}, protocol {protocol} (train step incl. optimiser; images/s higher is better)",
             f"{'method':<14}{'model':<16}{'batch':>6}{'images/s':>12}{'ms/step':>10}{'graph':>7}{'peak MB':>10}"]
    for r in results:
        peak = "-" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}"
        lines.append(f"{r.method:<14}{r.model:<16}{r.batch_size:>6}{r.images_per_second:>12,.0f}"
                     f"{r.ms_per_step:>10.2f}{'yes' if r.cuda_graph else 'no':>7}{peak:>10}")
    return "\n".join(lines)
