"""GroupDRO, IRMv1 and PGI on hand-built tensors against their papers' equations, and Ahmed et al.'s partition
inference on features whose minority is known."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods._groups import (
    GroupHparams,
    balanced_risk,
    group_means,
    infer_partition,
    membership,
    scale_gradients,
    soft_split_objective,
    train_partition_predictor,
)
from methods.groupdro import dro_update
from methods.irm import irm_penalties
from methods.pgi import pgi_penalty


def test_group_means_and_the_balanced_risk_skip_absent_groups() -> None:
    losses = torch.tensor([1.0, 3.0, 10.0, 0.0])
    groups = torch.tensor([0, 0, 2, 2])
    means, present = group_means(losses, groups, 3)
    assert means.tolist() == [2.0, 0.0, 5.0] and present.tolist() == [True, False, True]
    assert balanced_risk(losses, groups, 3).item() == pytest.approx(3.5)  # (2 + 5) / 2, group 1 absent


def test_groupdro_step_exponentiates_the_batch_group_losses_and_renormalises() -> None:
    q = torch.tensor([0.5, 0.25, 0.25])
    losses = torch.tensor([1.0, 2.0, 0.0])
    present = torch.tensor([True, True, False])
    new = dro_update(q, losses, present, step_size=0.5)
    raw = [0.5 * math.exp(0.5), 0.25 * math.exp(1.0), 0.25]
    assert new.tolist() == pytest.approx([r / sum(raw) for r in raw])
    assert dro_update(q, losses, present, step_size=0.0).tolist() == pytest.approx(q.tolist())


def test_irm_penalty_is_the_squared_gradient_of_the_dummy_scale() -> None:
    torch.manual_seed(0)
    logits = torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (12,))
    groups = torch.tensor([0] * 5 + [1] * 7)
    penalties, present = irm_penalties(logits, y, groups, 3)
    for e in (0, 1):
        w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        members = groups == e
        (grad,) = torch.autograd.grad(F.cross_entropy(w * logits[members], y[members]), w)
        assert penalties[e].item() == pytest.approx(grad.item() ** 2, rel=1e-12)
    assert present.tolist() == [True, True, False] and penalties[2].item() == 0.0


def test_irm_penalty_is_zero_where_the_scale_is_already_optimal() -> None:
    logits = torch.tensor([[2.0, -2.0], [-2.0, 2.0]]) * 0.0  # uniform predictions of two labels: d/dw = 0
    penalties, _ = irm_penalties(logits, torch.tensor([0, 1]), torch.tensor([0, 0]), 1)
    assert penalties.tolist() == [0.0]


def test_pgi_penalty_holds_each_minority_mean_prediction_to_its_class_majority() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1])
    groups = torch.tensor([0, 0, 1, 1, 1])  # class 1 has only its majority group in the batch: no term
    majority = torch.tensor([0, 1])
    value = pgi_penalty(probs, y, groups, majority, num_classes=2, n_groups=2)
    p_maj, p_min = torch.tensor([0.8, 0.2], dtype=torch.float64), torch.tensor([0.5, 0.5], dtype=torch.float64)
    expected = (p_min * (p_min / p_maj).log()).mean()  # Ahmed et al.'s pgi_closs: KL(minority ‖ majority) / K
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    same = pgi_penalty(probs[:2].repeat(2, 1), torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 1, 1]),
                       majority, 2, 2)
    assert same.item() == pytest.approx(0.0, abs=1e-12)  # equal mean predictions: no penalty


def test_soft_split_objective_at_a_hard_split_is_the_two_risks_and_irm_penalties() -> None:
    torch.manual_seed(1)
    logits = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    losses = F.cross_entropy(logits, y, reduction="none")
    grads = scale_gradients(logits, y)
    alpha = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    total = 0.0
    for side in (alpha == 1, alpha == 0):
        w = torch.ones(3, dtype=torch.float64, requires_grad=True)
        risk = F.cross_entropy(logits[side] * w, y[side])
        (g,) = torch.autograd.grad(risk, w)
        total += risk.item() + 10 * g.pow(2).sum().item()
    assert soft_split_objective(alpha, losses, grads).item() == pytest.approx(total, rel=1e-12)


def separable_class(seed: int, n: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class whose fifth sits apart in feature space and carries a high loss (predicted as the other class)."""
    torch.manual_seed(seed)
    minority = torch.arange(n) % 5 == 0
    features = torch.randn(n, 8) * 0.1
    features[:, 0] += torch.where(minority, 3.0, -3.0)
    logits = torch.stack([torch.where(minority, -4.0, 4.0), torch.zeros(n)], 1)
    return features, logits, minority


def test_the_partition_predictor_ascends_the_split_objective() -> None:
    features, logits, _ = separable_class(0)
    y = torch.zeros(len(features), dtype=torch.long)
    losses, grads = F.cross_entropy(logits, y, reduction="none"), scale_gradients(logits, y)
    hp = GroupHparams(epochs=2, partition_steps=200, partition_lr=1e-2, partition_batch=100)

    def objective(steps: int) -> float:
        torch.manual_seed(3)
        trained = GroupHparams(**{**vars(hp), "partition_steps": steps})
        predictor = train_partition_predictor(features, losses, grads, trained)
        with torch.no_grad():
            alpha = membership(predictor, features, hp.partition_temperature)
            return soft_split_objective(alpha, losses, grads).item()

    assert objective(200) > objective(1) + 0.5


@pytest.mark.parametrize("seed", range(3))
def test_inferred_minority_is_the_higher_loss_side_of_each_class(seed: int) -> None:
    features, logits, _ = separable_class(seed)
    y = torch.tensor([0, 1]).repeat(50)
    logits = torch.where(y[:, None] == 1, logits.flip(1), logits)  # the same picture for class 1
    hp = GroupHparams(epochs=2, partition_steps=300, partition_lr=1e-2, partition_batch=50)
    beta = infer_partition(features, logits, y, 2, hp)
    losses = F.cross_entropy(logits, y, reduction="none")
    assert set(beta.tolist()) <= {0, 1}
    split = [c for c in (0, 1) if 0 < int(beta[y == c].sum()) < int((y == c).sum())]
    assert split  # the separable picture is split in at least one class
    for c in split:
        side = beta[y == c]
        assert losses[y == c][side == 1].mean() > losses[y == c][side == 0].mean()


@pytest.mark.parametrize("name", ["groupdro_inferred", "irm_inferred", "pgi_inferred"])
def test_an_inferred_variant_is_never_selected_at_its_erm_epochs(tmp_path, name: str) -> None:
    """Before the partition exists an inferred variant is plain ERM: those epochs are not selectable, so no rule
    reports them as the method (IRM* and PGI* once chose their ERM epoch 1 on its lower validation loss)."""
    from bench.runner import execute
    from bench.runs import make_run_config
    from bench.store import Store
    from tests.conftest import TINY_DATA, TINY_HP

    cfg = make_run_config(name, "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 3, "partition_epochs": 2},
                          TINY_DATA)
    store = Store(tmp_path)
    record = execute(cfg, store, torch.device("cpu"), progress=False)
    assert [row["selectable"] for row in store.epochs(cfg.run_id)] == [False, False, True]
    assert {row["epoch"] for row in record["final"].values()} == {3}
    true_groups = make_run_config(name.removesuffix("_inferred"), "coloured_mnist", "fast", 0,
                                  {**TINY_HP, "epochs": 2}, TINY_DATA)
    execute(true_groups, store, torch.device("cpu"), progress=False)
    assert all(row["selectable"] for row in store.epochs(true_groups.run_id))
