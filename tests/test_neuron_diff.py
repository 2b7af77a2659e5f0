"""Neuron differentiation: GCE, the Gumbel-sigmoid masks (hard forward, differentiable), the IoU term, the
stage schedule, the first split by the GCE model's mistakes, the re-assignment rule, and the three points of
Algorithm 1 / Sec. 4.1 an earlier version missed: D_a's weighting (ND1), fine-tuning Θ inside the loop before
each re-assignment (ND2) and per-sub-model batch-norm statistics (ND3)."""
from __future__ import annotations

import pytest
import torch

from bench.losses import gce
from bench.method import build_method, get_method, resolve_hparams
from methods.neuron_diff import gumbel_sigmoid, soft_iou, subset_weights


def build(dataset, **hp):
    torch.manual_seed(0)
    hparams = resolve_hparams(get_method("neuron_diff"), "fast", {"batch_size": 32, **hp})
    return build_method(get_method("neuron_diff"), hparams, dataset, "cnn3", torch.device("cpu"), None)


def test_gce_matches_its_definition() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(logits, 1)[torch.arange(2), y]
    torch.testing.assert_close(gce(logits, y, 0.7), (1 - p**0.7) / 0.7)
    torch.testing.assert_close(gce(logits, y, 1.0), 1 - p)  # q = 1: mean absolute error


def test_masks_are_binary_forward_and_differentiable() -> None:
    torch.manual_seed(0)
    logits = torch.zeros(1000, requires_grad=True)
    mask = gumbel_sigmoid(logits, 1.0)
    assert torch.allclose(mask.detach(), mask.detach().round(), atol=1e-6)  # 0/1 up to float rounding
    assert 0.4 < float(mask.detach().mean()) < 0.6  # σ(0) = 1/2
    (grad,) = torch.autograd.grad((mask * torch.arange(1000.0)).sum(), logits)
    assert float(grad.abs().sum()) > 0
    assert float(gumbel_sigmoid(torch.full((1000,), 5.0), 1.0).mean()) > 0.97


def test_iou_behaves_as_defined() -> None:
    a = [torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.ones(2, 2)]
    assert float(soft_iou(a, a)) == pytest.approx(1.0)
    disjoint = [torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.zeros(2, 2)]
    assert float(soft_iou(a[:1], disjoint[:1])) == pytest.approx(0.0)
    half = [torch.tensor([1.0, 0.0, 1.0, 0.0])]
    assert float(soft_iou(a[:1], half)) == pytest.approx(1 / 3)  # 1 shared of 3 in the union
    soft = torch.tensor([0.5, 0.5], requires_grad=True)
    (grad,) = torch.autograd.grad(soft_iou([soft], [torch.ones(2)]), soft)
    assert torch.all(grad > 0)  # more overlap, more loss


def test_stages_and_the_first_split(tiny_dataset) -> None:
    method = build(tiny_dataset)
    hp = method.hp
    assert [hp.stage(e) for e in range(hp.epochs)] == ["bias", "vanilla", "vanilla", "masks", "tune", "masks",
                                                       "finetune"]
    train = tiny_dataset.splits["train"]
    method.train()
    method.step(train.batch(torch.arange(32)))
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    expected_a = ~method.correct(lambda x: method.model(x))
    method.on_epoch_start(1)  # bias → vanilla: split by the GCE model's mistakes, then re-initialise θ
    assert torch.equal(method.core, expected_a)
    assert any(not torch.equal(before[k], v) for k, v in method.model.state_dict().items() if "weight" in k)
    method.on_epoch_start(3)  # masks: only the mask logits train
    assert all(not p.requires_grad for p in method.model.parameters())
    batch = train.batch(torch.arange(32))
    logs = method.step(batch)
    assert 0 < float(logs["iou"]) <= 1
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in method.mask_logits.values())


def test_reassignment_moves_mistakes_to_the_other_subset(tiny_dataset) -> None:
    method = build(tiny_dataset)
    method.on_epoch_start(1)
    method.on_epoch_start(3)
    right_a, right_b = method.correct(method.binary("a")), method.correct(method.binary("b"))
    old = method.core.clone()
    method.reassign()
    assert torch.equal(method.core[old], right_a[old])  # core members stay only if A gets them right
    assert torch.equal(method.core[~old], ~right_b[~old])  # the others join the core if B gets them wrong


def test_subset_weights_follow_section_4_1() -> None:
    """A: core ("wrong-answered") samples at (K − 1)/r, its random extra samples at 1, the rest 0;
    B: the core at 0, everything else at 1."""
    core = torch.tensor([True, False, False, False])
    extra = torch.tensor([False, True, False, True])
    w = subset_weights(core, extra, torch.tensor(0.25), num_classes=10)
    torch.testing.assert_close(w["a"], torch.tensor([36.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(w["b"], torch.tensor([0.0, 1.0, 1.0, 1.0]))
    # with every non-core sample mixed in, the core holds (K − 1)/(K − r) of A's weight: colour-balanced data
    # when the core is the bias-conflicting set (r = 1 %: 90.0 % of the weight on 1 % of the samples)
    core = torch.arange(1000) < 10
    w = subset_weights(core, ~core, core.float().mean(), num_classes=10)
    assert float(w["a"][core].sum() / w["a"].sum()) == pytest.approx(9 / 9.99)


def test_mask_loss_is_equation_5_with_the_weighted_subsets(tiny_dataset) -> None:
    """ND1: L_m on a hand-built assignment equals Eq. 5 computed independently. The initial masks keep every
    weight and each sub-model starts from the network's statistics, so in eval mode both sub-models are the
    plain network: L_s = Σ w·GCE / Σ w + λ Σ|θ| with Sec. 4.1's weights, and IoU = 1."""
    method = build(tiny_dataset, mask_size_weight=1e-3)
    method.on_epoch_start(1)
    method.on_epoch_start(3)
    n = len(tiny_dataset.splits["train"])
    core = torch.zeros(n, dtype=torch.bool)
    core[[0, 3, 5, 40]] = True  # r = 4/n; batch 0..15 holds three of them
    extra = ~core & (torch.arange(n) % 2 == 0)
    method.core, method.extra = core, extra
    method.eval()
    batch = tiny_dataset.splits["train"].batch(torch.arange(16))
    logs = method.mask_losses(batch, sample=False)
    with torch.no_grad():
        per_sample = gce(method.model(batch.x), batch.y, 0.7)
        size = 1e-3 * sum(method.model.get_parameter(name).abs().sum() for name in method.names)
    up = 9 / (4 / n)
    w_a = torch.where(core[:16], torch.tensor(up), extra[:16].float())
    w_b = (~core[:16]).float()
    expected_a = (per_sample * w_a).sum() / w_a.sum() + size
    expected_b = (per_sample * w_b).sum() / w_b.sum() + size
    torch.testing.assert_close(logs["loss_a"], expected_a)
    torch.testing.assert_close(logs["loss_b"], expected_b)
    assert float(logs["iou"]) == pytest.approx(1.0)
    torch.testing.assert_close(logs["loss"], expected_a + expected_b + 1.0)


def test_theta_is_fine_tuned_before_each_reassignment(tiny_dataset, monkeypatch) -> None:
    """ND2 (Algorithm 1: update masks; fine-tune Θ for evaluation; evaluate; re-assign): the loop alternates
    mask epochs and Θ-tuning epochs, a tuning epoch trains θ (not the masks) with the binarised masks, and the
    re-assignment comes after it; only fine-tuned epochs are selectable."""
    hp = resolve_hparams(get_method("neuron_diff"), "paper", {})
    loop = [hp.stage(e) for e in range(hp.bias_epochs + hp.vanilla_epochs, hp.epochs - hp.finetune_epochs)]
    assert loop == ["masks"] * 3 + ["tune"] + ["masks"] * 3 + ["tune"] + ["masks"] * 3 + ["tune"] + ["masks"] * 2
    assert loop.count("masks") * 48_000 // 256 == pytest.approx(2000, rel=0.05)  # the paper's 2k mask iterations
    method = build(tiny_dataset)
    events: list[str] = []
    monkeypatch.setattr(method, "reassign", lambda: events.append("reassign"))
    train = tiny_dataset.splits["train"]
    method.train()
    for epoch in range(method.hp.epochs):
        method.on_epoch_start(epoch)
        masks_before = {k: v.clone() for k, v in method.mask_logits.items()}
        theta_before = {k: v.clone() for k, v in method.model.named_parameters()}
        method.step(train.batch(torch.arange(32)))
        moved_masks = any(not torch.equal(masks_before[k], v) for k, v in method.mask_logits.items())
        moved_theta = any(not torch.equal(theta_before[k], v) for k, v in method.model.named_parameters())
        events.append(f"{method.current}:{'masks' if moved_masks else ''}{'theta' if moved_theta else ''}"
                      f":{'selectable' if method.selectable() else ''}")
    assert events == ["bias:theta:", "vanilla:theta:", "vanilla:theta:", "masks:masks:", "tune:theta:selectable",
                      "reassign", "masks:masks:", "finetune:theta:selectable"]


def test_each_sub_model_keeps_its_own_batch_norm_statistics(tiny_dataset) -> None:
    """ND3: training forwards of B leave A's statistics, and so A's evaluation, unchanged; the predictor
    module carries A's statistics."""
    method = build(tiny_dataset)
    method.on_epoch_start(1)
    method.on_epoch_start(3)
    train = tiny_dataset.splits["train"]
    method.train()
    method.step(train.batch(torch.arange(32)))
    key = next(k for k in method.bn["a"] if k.endswith("running_mean"))
    assert not torch.equal(method.bn["a"][key], method.bn["b"][key])
    x = train.batch(torch.arange(64, 96)).x
    method.eval()
    with torch.no_grad():
        before = method.predict(x)
        method.train()
        method.sub_model(train.batch(torch.arange(32, 64)).x, "b", method.masks("b", sample=True))
        method.eval()
        torch.testing.assert_close(method.predict(x), before, rtol=0, atol=0)
        torch.testing.assert_close(method.predictor()(x), before)


def test_mask_init_sets_every_initial_logit_and_leaves_the_papers_run_ids(tiny_dataset) -> None:  # noqa: ANN001
    from bench.errors import UserError
    from bench.suites import get_suite

    method = build(tiny_dataset, mask_init=4.0)
    assert all(torch.equal(p, torch.full_like(p, 4.0)) for p in method.mask_logits.values())
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in build(tiny_dataset).mask_logits.values())
    with pytest.raises(UserError, match="mask_init must be in"):
        resolve_hparams(get_method("neuron_diff"), "fast", {"mask_init": -1.0})
    ids = {c.run_id for c in get_suite("paper-nd-cmnist").expand(1)}  # recorded before the option existed
    assert {"neuron_diff-cmnist_lff-paper-s0-2e90aa6284", "neuron_diff-cmnist_lff-paper-s0-3f5be2e473"} <= ids
