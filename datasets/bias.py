"""Shared rules for assigning bias attributes to samples (used by several dataset families).

All randomness is drawn from a CPU ``torch.Generator`` so that a dataset is identical on any device.
"""
from __future__ import annotations

import torch
from torch import Tensor

from bench.data import SplitRoles


def block_bias(y: Tensor, num_bias: int, aligned_fraction: float) -> Tensor:
    """LfF's deterministic assignment (Nam et al. 2020, ``make_dataset.py``): within class ``c`` (in the
    order given), the first ``round(n_c · p)`` samples get bias ``c`` and the rest are spread evenly over
    the other ``num_bias − 1`` bias values, in blocks; ``p = aligned_fraction``.

    The bias-conflicting fraction of each class is therefore ``1 − p`` up to rounding (one sample per
    bias value). Shuffle the samples first to make the blocks random.
    """
    bias = torch.empty_like(y)
    for c in range(num_bias):
        members = (y == c).nonzero().flatten()
        n = len(members)
        ratios = torch.full((num_bias,), (1 - aligned_fraction) / max(num_bias - 1, 1), dtype=torch.float64)
        ratios[c] = aligned_fraction
        milestones = torch.round(n * ratios.cumsum(0)).long()
        milestones[-1] = n
        # sample i of the class takes the smallest j with milestone_j > i
        bias[members] = torch.searchsorted(milestones, torch.arange(n), right=True)
    return bias


def shuffled_block_bias(y: Tensor, num_bias: int, aligned_fraction: float, gen: torch.Generator) -> Tensor:
    """``block_bias`` applied in a random order, so that the conflicting samples are random ones."""
    order = torch.randperm(len(y), generator=gen)
    bias = torch.empty_like(y)
    bias[order] = block_bias(y[order], num_bias, aligned_fraction)
    return bias


def random_other(y: Tensor, num_values: int, gen: torch.Generator) -> Tensor:
    """For each sample, a value uniformly chosen among the ``num_values − 1`` values other than ``y``."""
    return (y + torch.randint(1, num_values, y.shape, generator=gen)) % num_values


def bernoulli_bias(y: Tensor, num_values: int, aligned_probability: float, gen: torch.Generator) -> Tensor:
    """``y`` with probability ``aligned_probability``, else a uniformly chosen other value."""
    aligned = torch.rand(y.shape, generator=gen) < aligned_probability
    return torch.where(aligned, y, random_other(y, num_values, gen))


def aligned_group(y: Tensor, bias: Tensor) -> Tensor:
    """Group 0 where the bias attribute agrees with the label (bias-aligned), 1 where it does not."""
    return (bias != y).long()


ALIGNED_GROUPS = {0: "bias-aligned", 1: "bias-conflicting"}
ALIGNED_KINDS = {0: "aligned", 1: "conflicting"}  # ``SplitRoles.group_kinds`` of ``ALIGNED_GROUPS``


def unbiased_test_roles() -> SplitRoles:
    """The roles of LfF-style families: an IID test split, the unbiased test set and its conflicting part;
    the unbiased accuracy is the headline (LfF's and neuron differentiation's tables) and the oracle's target."""
    return SplitRoles(selection="val", validation=("val",), iid="iid", shifted=("unbiased", "conflicting"),
                      oracle="unbiased_acc", headline="unbiased_acc", group_kinds=dict(ALIGNED_KINDS))
