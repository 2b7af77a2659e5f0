"""Whole-step CUDA-graph capture for methods whose ``step`` is capturable (fixed shapes, no host sync)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bench.data import Batch

WARMUP_STEPS = 3


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
        self.side = torch.cuda.Stream()

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        self.calls += 1
        if self.calls <= WARMUP_STEPS:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                out = self.step(batch)
            torch.cuda.current_stream().wait_stream(self.side)
            return out
        if self.graph is None:
            self._capture(batch)
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
