"""Protocols: named training set-ups (models, dataset options). Methods add their own per-protocol
hyper-parameter overrides in their ``protocols`` class attribute."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.registry import Registry


@dataclass(frozen=True)
class Protocol:
    name: str
    model: str
    teacher_model: str
    description: str
    dataset_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_batch_size: int = 512
    log_every: int = 50

    def dataset_options(self, dataset: str) -> dict[str, Any]:
        return dict(self.dataset_params.get(dataset, {}))


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def register_protocol(protocol: Protocol) -> Protocol:
    return PROTOCOLS.register(protocol.name)(protocol)


def list_protocols() -> list[str]:
    return PROTOCOLS.names()


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


register_protocol(Protocol(
    name="paper",
    model="resnet18",
    teacher_model="resnet34",
    description="The explanation-distillation paper's COLOURED MNIST set-up: ResNet18 student, ResNet34 "
                "teacher (torchvision layout, not adapted to 28×28), full 48k/12k/10k splits, "
                "the appendix's epochs and optimiser settings per method.",
))

register_protocol(Protocol(
    name="fast",
    model="small_cnn",
    teacher_model="small_cnn",
    description="A short CPU-friendly schedule on a small CNN (same data, same losses, few epochs): shows "
                "the paper's ordering in minutes, not its exact numbers.",
))

register_protocol(Protocol(
    name="cpu",
    model="small_cnn",
    teacher_model="small_cnn",
    description="The CPU reproduction protocol: the paper's data, losses and optimiser settings on small CNNs (student "
                "and teacher), with epochs per method set in the reproduction suite (repro-*) where measured curves "
                "flatten, so that one table at one seed fits 90 minutes on 2 CPU cores. It reproduces orderings and "
                "gaps, not the paper's ResNet numbers.",
))
