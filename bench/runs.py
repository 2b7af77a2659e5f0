"""A run is a frozen config (method, dataset, model, hyper-parameters, seed, protocol); its id is a hash."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.config import config_hash
from bench.data import dataset_config
from bench.errors import UserError
from bench.method import get_method, hparams_dict, resolve_hparams
from bench.models import MODELS
from bench.protocols import get_protocol

TEACHER_METHOD = "teacher"
MAX_SEED = 2**32 - 1  # fits SQLite's signed 64-bit integers, torch generators and the runner's per-epoch seeds
TEACHER_SEED = 0  # one teacher per dataset × protocol, reused by every seed (as in the paper)


@dataclass(frozen=True)
class RunConfig:
    method: str
    dataset: str
    protocol: str
    seed: int
    model: str
    hparams: dict[str, Any] = field(default_factory=dict)
    dataset_params: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def run_id(self) -> str:
        return f"{self.method}-{self.dataset}-{self.protocol}-s{self.seed}-{config_hash(self.to_dict(), 10)}"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        return cls(**values)

    def label(self) -> str:
        return f"{self.method} on {self.dataset} ({self.protocol}, seed {self.seed}, {self.model})"


def make_run_config(method: str, dataset: str, protocol: str = "fast", seed: int = 0,
                    hparams: dict[str, Any] | None = None, dataset_params: dict[str, Any] | None = None,
                    model: str | None = None, teacher_model: str | None = None,
                    teacher_hparams: dict[str, Any] | None = None) -> RunConfig:
    """Resolve and validate everything a run needs; the result fully determines the run."""
    method_cls = get_method(method)
    proto = get_protocol(protocol)
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed}")
    params = {**proto.dataset_options(dataset), **(dataset_params or {})}
    params = dataclasses.asdict(dataset_config(dataset, params))
    hp = hparams_dict(resolve_hparams(method_cls, protocol, hparams))
    chosen_model = model or (proto.teacher_model if method_cls.is_teacher else proto.model)
    MODELS.get(chosen_model)
    teacher = None
    if "teacher" in method_cls.requires:
        teacher = make_run_config(TEACHER_METHOD, dataset, protocol, TEACHER_SEED, teacher_hparams, dataset_params,
                                  model=teacher_model).to_dict()
    return RunConfig(method, dataset, protocol, seed, chosen_model, hp, params, teacher)
