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


def test_mining_metrics_score_the_mined_set_against_the_true_conflicting_samples() -> None:
    from bench.metrics import mining_metrics

    mined = torch.tensor([True, True, True, False, False, False])
    conflicting = torch.tensor([True, True, False, True, False, False])
    values = mining_metrics(mined, conflicting)
    assert values == pytest.approx({"mined_share": 0.5, "mined_precision": 2 / 3, "mined_recall": 2 / 3,
                                    "train_conflicting_share": 0.5})
    assert mining_metrics(None, conflicting) == {}
    assert mining_metrics(mined, torch.zeros(6, dtype=torch.bool)) == {}  # nothing to find: no numbers


def test_upweighted_is_what_lffs_weight_puts_above_one_half() -> None:
    from methods._mining import upweighted

    labels = torch.tensor([0, 0, 1, 1])
    biased, debiased = LossEMA(labels, 2, 0.7), LossEMA(labels, 2, 0.7)
    biased.update(torch.tensor([0, 1, 2]), torch.tensor([2.0, 0.1, 1.0]))
    debiased.update(torch.tensor([0, 1, 2]), torch.tensor([0.5, 1.0, 1.0]))
    assert upweighted(biased, debiased) is None  # sample 3 not seen yet
    biased.update(torch.tensor([3]), torch.tensor([0.5]))
    debiased.update(torch.tensor([3]), torch.tensor([1.0]))
    # normalised per class: biased (1, .05 | 1, .5), debiased (.5, 1 | 1, 1)
    assert upweighted(biased, debiased).tolist() == [True, False, False, False]


@pytest.mark.parametrize("method", ["jtt", "lff", "dfa", "dcwp", "groupdro_inferred"])
def test_runs_of_label_only_methods_record_how_well_they_found_the_minority(method: str, tmp_path) -> None:
    from bench.runs import make_run_config
    from bench.store import Store
    from bench.sweep import run_sweep
    from tests.conftest import TINY_DATA

    hp = {"epochs": 3, "batch_size": 64, **({"id_epochs": 1} if method == "jtt" else {}),
          **({"prune_epochs": 1, "retrain_epochs": 1} if method == "dcwp" else {})}
    cfg = make_run_config(method, "coloured_mnist", "fast", 0, hp, {**TINY_DATA, "strength": 0.8})
    assert run_sweep([cfg], tmp_path, "cpu", progress=False)["finished"] == 1
    last = Store(tmp_path).epochs(cfg.run_id)[-1]
    assert 0 < last["mined_share"] <= 1 and 0 <= last["mined_precision"] <= 1 and 0 <= last["mined_recall"] <= 1
    record = Store(tmp_path).get(cfg.run_id)
    assert "group" not in record["meta"]["read_fields"]  # measured by the runner, never read by the method


def test_methods_that_do_not_mine_report_nothing(tmp_path) -> None:
    from bench.runs import make_run_config
    from bench.store import Store
    from bench.sweep import run_sweep
    from tests.conftest import TINY_DATA

    cfg = make_run_config("groupdro", "coloured_mnist", "fast", 0, {"epochs": 2, "batch_size": 64},
                          {**TINY_DATA, "strength": 0.8})
    run_sweep([cfg], tmp_path, "cpu", progress=False)
    assert not [k for k in Store(tmp_path).epochs(cfg.run_id)[-1] if k.startswith("mined_")]


def test_mining_table_reads_each_runs_last_scored_epoch() -> None:
    from reports.blocks import Table
    from reports.mining import mining_blocks

    def record(method: str, epochs: list[dict]) -> dict:
        return {"method": method, "dataset": "cmnist_lff", "seed": 0, "epochs": epochs,
                "config": {"dataset_params": {"conflict_ratio": 0.01}}}

    scored = {"mined_share": 0.02, "mined_precision": 0.4, "mined_recall": 0.8, "train_conflicting_share": 0.01}
    records = [record("jtt", [{"epoch": 1}, {"epoch": 2, **scored}, {"epoch": 3, **scored, "mined_recall": 0.9}]),
               record("erm", [{"epoch": 1}])]
    blocks = mining_blocks(records)
    table = next(b for b in blocks if isinstance(b, Table))
    assert table.rows == [["cmnist_lff", "jtt", "0", "3", "2.0", "40.0", "90.0", "1.0"]]
    assert mining_blocks([records[1]]) == []
