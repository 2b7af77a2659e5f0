"""LfF's and JTT's pieces on hand-built tensors: GCE's limit, the per-sample loss averages and their class-wise
normalisation, the relative-difficulty weight, and JTT's up-weighted error set."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.losses import gce
from methods._mining import LossEMA, relative_difficulty
from methods.jtt import error_set_weights


def test_gce_tends_to_cross_entropy_as_q_tends_to_zero() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    torch.testing.assert_close(gce(logits, y, 1e-7), F.cross_entropy(logits, y, reduction="none"), rtol=1e-5,
                               atol=1e-6)


def test_gce_gradient_is_p_to_the_q_times_the_cross_entropy_gradient() -> None:
    logits = torch.tensor([[1.0, -0.5, 0.2]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0])
    (g_gce,) = torch.autograd.grad(gce(logits, y, 0.7).sum(), logits)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(logits, y), logits)
    p = F.softmax(logits, 1)[0, 0].detach()
    torch.testing.assert_close(g_gce, p**0.7 * g_ce)


def test_loss_averages_start_at_the_first_loss_then_move_by_one_minus_alpha() -> None:
    ema = LossEMA(torch.tensor([0, 0, 1]), num_classes=2, alpha=0.7)
    ema.update(torch.tensor([0, 2]), torch.tensor([2.0, 4.0]))
    assert ema.values.tolist() == [2.0, 0.0, 4.0]
    ema.update(torch.tensor([0, 1]), torch.tensor([1.0, 3.0]))
    assert ema.values.tolist() == pytest.approx([0.7 * 2.0 + 0.3 * 1.0, 3.0, 4.0])
    # divided by the largest average of the sample's class over the whole table (class 0: 3.0, class 1: 4.0)
    assert ema.normalised(torch.tensor([0, 1, 2])).tolist() == pytest.approx([1.7 / 3.0, 1.0, 1.0])


def test_relative_difficulty_weights_what_the_biased_model_fails_on() -> None:
    w = relative_difficulty(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, 0.5]))
    assert w.tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_jtt_up_weights_exactly_the_identification_models_errors() -> None:
    correct = torch.tensor([True, False, True, False])
    assert error_set_weights(correct, 50.0).tolist() == [1.0, 50.0, 1.0, 50.0]


def test_dfa_swap_keeps_the_intrinsic_labels_and_swaps_the_bias_labels() -> None:
    from types import SimpleNamespace

    from methods.dfa import DFAHparams, dfa_losses

    torch.manual_seed(0)
    hp = DFAHparams(epochs=2, swap_epochs=1, lr_milestones=(), lambda_dis=10.0, lambda_swap_b=3.0, lambda_swap=0.5)
    heads = SimpleNamespace(head_i=torch.nn.Linear(4, 3).double(), head_b=torch.nn.Linear(4, 3).double())
    z_i = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1])
    w = torch.rand(5, dtype=torch.float64)
    perm = torch.tensor([3, 0, 4, 1, 2])
    logs = dfa_losses(heads, z_i, z_b, y, w, perm, hp)  # type: ignore[arg-type]

    def ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, reduction="none")

    zs = z_b[perm]
    dis = (w * ce(heads.head_i(torch.cat([z_i, z_b], 1)), y)).mean() + 10 * gce(heads.head_b(torch.cat([z_i, z_b], 1)),
                                                                                 y, 0.7).mean()
    swap = (w * ce(heads.head_i(torch.cat([z_i, zs], 1)), y)).mean() + 3 * gce(heads.head_b(torch.cat([z_i, zs], 1)),
                                                                               y[perm], 0.7).mean()
    assert logs["loss"].item() == pytest.approx((dis + 0.5 * swap).item(), rel=1e-12)
    # the intrinsic head's terms never reach the bias features, the bias head's never the intrinsic ones
    intrinsic_only = (w * ce(heads.head_i(torch.cat([z_i, z_b.detach()], 1)), y)).mean()
    (g,) = torch.autograd.grad(logs["loss"] - 0.0, z_i, retain_graph=True)
    (g_ref,) = torch.autograd.grad(intrinsic_only + 0.5 * (w * ce(heads.head_i(torch.cat([z_i, zs.detach()], 1)),
                                                                 y)).mean(), z_i)
    torch.testing.assert_close(g, g_ref)
    assert dfa_losses(heads, z_i, z_b, y, w, None, hp)["loss"].item() == pytest.approx(dis.item(), rel=1e-12)  # type: ignore[arg-type]


def test_dcwp_contrastive_term_matches_a_loop_over_anchors() -> None:
    from methods.dcwp import debiased_supcon

    torch.manual_seed(0)
    feats = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    conflicting = torch.tensor([False, True, True, False, False, True])
    z = F.normalize(feats, dim=1)
    losses = []
    for i in range(6):
        positives = [j for j in range(6) if j != i and y[j] == y[i] and conflicting[j]]
        if not positives:
            continue
        sims = {j: (z[i] @ z[j]).item() / 0.07 for j in range(6) if j != i}
        log_norm = math.log(sum(math.exp(s) for s in sims.values()))
        losses.append(-sum(sims[j] - log_norm for j in positives) / len(positives))
    assert len(losses) == 3  # anchors 0, 1 and 2 (class 0): 1 and 2 are conflicting
    assert debiased_supcon(feats, y, conflicting, 0.07).item() == pytest.approx(sum(losses) / len(losses), rel=1e-9)


def test_dcwp_gate_is_binary_forward_with_the_soft_gradient() -> None:
    from methods.dcwp import dcwp_gumbel_sigmoid

    torch.manual_seed(0)
    pi = torch.full((2000,), 1.5, requires_grad=True)
    gate = dcwp_gumbel_sigmoid(pi, 1.0)
    values = gate.detach()
    assert torch.minimum(values, 1 - values).abs().max().item() < 1e-6  # 0 or 1 (up to hard + soft − soft)
    # the noise is added to σ(1.5) ≈ 0.82 and the gate opens where σ(π) + n > 0: P = σ(0.82)
    assert gate.detach().mean().item() == pytest.approx(torch.sigmoid(torch.sigmoid(torch.tensor(1.5))).item(),
                                                        abs=0.03)
    gate.sum().backward()
    assert pi.grad is not None and (pi.grad > 0).all()
