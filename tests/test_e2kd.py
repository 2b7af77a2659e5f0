"""e²KD: the loss is τ²·KL + λ·(1 − cos) of Grad-CAM maps for the teacher's top-1 class, checked against an
independent computation; λ = 0 is plain KD; frozen explanations equal live ones; the schedule."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.losses import soft_kl
from bench.method import build_method, get_method, resolve_hparams
from bench.models import create_model, feature_module
from methods.e2kd import warmup_cosine


def build(name: str, dataset, **hp):
    torch.manual_seed(0)
    teacher = create_model("small_cnn", dataset.num_classes).eval().requires_grad_(False)
    hparams = resolve_hparams(get_method(name), "fast", {"batch_size": 16, **hp})
    return build_method(get_method(name), hparams, dataset, "small_cnn", torch.device("cpu"), teacher)


def gradcam_by_hand(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Grad-CAM map, logits) with a forward hook on the feature layer: ReLU(Σ_k mean_hw(∂y_c/∂A_k) A_k)."""
    store = {}
    handle = feature_module(model).register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    logits = model(x)
    handle.remove()
    grad = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), store["a"], create_graph=True)[0]
    return F.relu((grad.mean((2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True)), logits


def test_loss_matches_an_independent_computation(tiny_dataset) -> None:
    method = build("e2kd", tiny_dataset, temperature=2.0, explanation_weight=3.0)
    batch = tiny_dataset.splits["train"].batch(torch.arange(16), method.train_views)
    method.train()
    logs = method.losses(batch, train=True)
    with torch.enable_grad():
        teacher_logits = method.teacher(batch.x)
        top = teacher_logits.argmax(1)
        teacher_map, _ = gradcam_by_hand(method.teacher, batch.x.clone().requires_grad_(True), top)
        student_map, student_logits = gradcam_by_hand(method.model, batch.x, top)
    up = lambda m: F.interpolate(m, size=(28, 28), mode="bilinear", align_corners=False).flatten(1)  # noqa: E731
    cos = F.cosine_similarity(up(student_map), up(teacher_map.detach()), dim=1)
    kl = F.kl_div(F.log_softmax(student_logits / 2, 1), F.softmax(teacher_logits / 2, 1), reduction="batchmean") * 4
    expected = kl + 3.0 * (1 - cos).mean()
    torch.testing.assert_close(logs["loss"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["kd_loss"], kl, rtol=1e-5, atol=1e-6)
    # the explanation term trains the student (double backward) and never the teacher
    grads = torch.autograd.grad(logs["explanation_loss"], method.trainable(), allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert all(p.grad is None for p in method.teacher.parameters())


def test_val_loss_regression_snapshot(tiny_dataset) -> None:
    """A regression snapshot, not an independent value: this implementation's loss when
    ``test_loss_matches_an_independent_computation`` passed. It catches silent changes only."""
    method = build("e2kd", tiny_dataset)
    batch = tiny_dataset.splits["val"].batch(torch.arange(16), method.train_views)
    method.eval()
    assert float(method.val_loss(batch)) == pytest.approx(SNAPSHOT_VAL_LOSS, rel=1e-4)


SNAPSHOT_VAL_LOSS = 0.4592059552669525


def test_kd_baseline_is_plain_kd(tiny_dataset) -> None:
    method = build("e2kd_kd", tiny_dataset, temperature=4.0)
    batch = tiny_dataset.splits["train"].batch(torch.arange(16), method.train_views)
    logs = method.losses(batch, train=True)
    expected = soft_kl(method.model(batch.x), method.teacher(batch.x), 4.0)
    torch.testing.assert_close(logs["loss"], expected)
    assert float(logs["explanation_loss"]) == 0.0


def test_frozen_explanations_equal_live_ones(tiny_dataset) -> None:
    live = build("e2kd", tiny_dataset)
    frozen = build("e2kd", tiny_dataset, frozen_explanations=True, augment="none")
    frozen.model.load_state_dict(live.model.state_dict())
    index = torch.tensor([5, 0, 17, 3])
    batch = tiny_dataset.splits["train"].batch(index, live.train_views)
    assert frozen.frozen["maps"].shape[0] == len(tiny_dataset.splits["train"])
    for a, b in zip(live.teacher_side(batch), frozen.teacher_side(batch), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(live.losses(batch, True)["loss"], frozen.losses(batch, True)["loss"])


def test_warmup_cosine_schedule() -> None:
    assert warmup_cosine(0, 10, 5) == pytest.approx(0.01)
    assert warmup_cosine(5, 10, 5) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 5) == pytest.approx(0.0)
    assert warmup_cosine(0, 10, 0) == pytest.approx(1.0)


def test_bad_hparams() -> None:
    with pytest.raises(Exception, match="explanation must be one of"):
        resolve_hparams(get_method("e2kd"), "fast", {"explanation": "shap"})
    with pytest.raises(Exception, match="temperature"):
        resolve_hparams(get_method("e2kd"), "fast", {"temperature": 0})


def test_bcos_explanation_is_the_dynamic_linear_map() -> None:
    """B-cos networks are dynamic linear: W(x) · [x, 1 − x] equals the explained logit exactly."""
    pytest.importorskip("bcos")
    from bench.explain import explain_with_logits

    torch.manual_seed(0)
    model = create_model("bcos_resnet18", 2)
    x = torch.rand(3, 3, 32, 32)
    weights, logits, target = explain_with_logits(model, x, lambda z: z.argmax(1), "bcos")
    contributions = (weights * torch.cat([x, 1 - x], 1)).sum((1, 2, 3))
    torch.testing.assert_close(contributions, logits.gather(1, target[:, None]).squeeze(1), rtol=1e-4, atol=1e-6)


def test_e2kd_with_bcos_models_trains(tiny_dataset) -> None:
    pytest.importorskip("bcos")
    torch.manual_seed(0)
    teacher = create_model("bcos_resnet18", tiny_dataset.num_classes).eval().requires_grad_(False)
    hparams = resolve_hparams(get_method("e2kd"), "fast", {"batch_size": 8, "explanation": "bcos"})
    method = build_method(get_method("e2kd"), hparams, tiny_dataset, "bcos_resnet18", torch.device("cpu"), teacher)
    before = [p.detach().clone() for p in method.trainable()]
    logs = method.step(tiny_dataset.splits["train"].batch(torch.arange(8), method.train_views))
    assert torch.isfinite(logs["loss"]) and float(logs["explanation_loss"]) > 0
    assert sum(not torch.equal(b, p) for b, p in zip(before, method.trainable(), strict=True)) > 0.8 * len(before)
