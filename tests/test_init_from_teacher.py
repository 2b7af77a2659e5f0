"""``init_from_teacher``: a teacher-student method's network starts as a copy of the teacher (the
explanation-distillation paper's COCO-on-Places protocol); refused where it cannot apply."""
from __future__ import annotations

import pytest
import torch

from bench.data import BiasedDataset
from bench.errors import UserError
from bench.method import build_method, get_method, resolve_hparams
from bench.models import create_model

CPU = torch.device("cpu")


def teacher_for(dataset: BiasedDataset, model: str = "small_cnn") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(model, dataset.num_classes).eval().requires_grad_(False)


@pytest.mark.parametrize("name", ["lrp_distill", "output_distill", "e2kd"])
def test_the_student_starts_as_the_teacher(name: str, tiny_dataset: BiasedDataset) -> None:
    teacher = teacher_for(tiny_dataset)
    cls = get_method(name)
    torch.manual_seed(1)
    method = build_method(cls, resolve_hparams(cls, "fast", {"init_from_teacher": True}), tiny_dataset, "small_cnn",
                          CPU, teacher)
    student, reference = method.predictor().state_dict(), teacher.state_dict()
    assert all(torch.equal(student[k], reference[k]) for k in reference)
    torch.manual_seed(1)
    scratch = build_method(cls, resolve_hparams(cls, "fast", {}), tiny_dataset, "small_cnn", CPU, teacher)
    conv = next(k for k in reference if k.endswith("weight"))
    assert not torch.equal(scratch.predictor().state_dict()[conv], reference[conv])


def test_a_method_without_teacher_refuses_the_option() -> None:
    with pytest.raises(UserError, match="init_from_teacher applies to teacher-student methods"):
        resolve_hparams(get_method("erm"), "fast", {"init_from_teacher": True})


def test_a_teacher_of_another_architecture_is_refused_with_the_fix(tiny_dataset: BiasedDataset) -> None:
    cls = get_method("output_distill")
    with pytest.raises(UserError, match="same --model for both"):
        build_method(cls, resolve_hparams(cls, "fast", {"init_from_teacher": True}), tiny_dataset, "small_cnn", CPU,
                     teacher_for(tiny_dataset, "cnn3"))
