"""Whole-step CUDA-graph capture for methods whose ``step`` is capturable (fixed shapes, no host sync).

Opt-in (``--cuda-graphs`` on the CLI, or ``BENCH_CUDA_GRAPHS=1``) until it has been checked on a GPU with
``tests/gpu/check_cuda.py``; ``run_bench.py perf`` always uses it for capturable methods. A capture
that fails falls back to the eager step with a warning.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch
from torch import Tensor

from bench.data import Batch

WARMUP_STEPS = 3
ENV_FLAG = "BENCH_CUDA_GRAPHS"


def enabled() -> bool:
    """Whether training runs capture capturable steps as CUDA graphs."""
    return os.environ.get(ENV_FLAG, "0") == "1"


class GraphedStep:
    """Runs the first ``WARMUP_STEPS`` batches eagerly on a side stream (this creates optimiser state and
    the autograd caches), captures the next batch's step, then replays the graph for every later batch
    after copying it into static buffers. Every batch is trained on exactly once."""

    def __init__(self, step: Callable[[Batch], dict[str, Tensor]]) -> None:
        self.step = step
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: Batch | None = None
        self.outputs: dict[str, Tensor] = {}
        self.failed = False
        self.side = torch.cuda.Stream()

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        self.calls += 1
        if self.calls <= WARMUP_STEPS:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                out = self.step(batch)
            torch.cuda.current_stream().wait_stream(self.side)
            return out
        if self.failed:
            return self.step(batch)
        if self.graph is None:
            try:
                self._capture(batch)
            except RuntimeError as err:  # e.g. an op that cannot be captured: train eagerly instead
                print(f"warning: CUDA-graph capture failed ({str(err).splitlines()[0]}); running eagerly",
                      file=sys.stderr)
                self.failed, self.graph = True, None
                return self.step(batch)
        else:
            self._load(batch)
        assert self.graph is not None
        self.graph.replay()
        return self.outputs

    def _capture(self, batch: Batch) -> None:
        self.static = batch.map(torch.clone)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self.step(self.static)

    def _load(self, batch: Batch) -> None:
        assert self.static is not None
        for name, value in batch.tensors().items():
            if value is not None:
                getattr(self.static, name).copy_(value, non_blocking=True)
