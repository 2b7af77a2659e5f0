"""Statistics over seeds: Student-t confidence intervals and seed-paired comparisons against a baseline."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Mean and half-width of the two-sided Student-t confidence interval of the mean (NaN half-width
    with fewer than two values)."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan
    sem = float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean, float(stats.t.ppf(0.5 + confidence / 2, data.size - 1)) * sem


@dataclass(frozen=True)
class Paired:
    """A seed-paired comparison: mean difference (method − baseline), two-sided paired t-test p-value,
    number of common seeds."""

    difference: float
    p_value: float
    n: int

    @property
    def mark(self) -> str:
        """▲ significantly better, ▼ significantly worse (p < ALPHA), '' otherwise or untestable."""
        if math.isnan(self.p_value) or self.p_value >= ALPHA:
            return ""
        return "▲" if self.difference > 0 else "▼"


def paired_comparison(method: Mapping[int, float], baseline: Mapping[int, float]) -> Paired:
    """Paired t-test over the seeds both have (a seed's runs share its data and initialisation seed).
    p is NaN with fewer than two common seeds; with identical differences on every seed it is 0 unless they
    are all zero (then 1)."""
    seeds = sorted(set(method) & set(baseline))
    pairs = [(method[s], baseline[s]) for s in seeds if not (math.isnan(method[s]) or math.isnan(baseline[s]))]
    if not pairs:
        return Paired(math.nan, math.nan, 0)
    diffs = np.asarray([a - b for a, b in pairs])
    difference = float(diffs.mean())
    if len(pairs) < 2:
        return Paired(difference, math.nan, len(pairs))
    if np.allclose(diffs, diffs[0]):
        return Paired(difference, 1.0 if diffs[0] == 0 else 0.0, len(pairs))
    result = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs])
    return Paired(difference, float(result.pvalue), len(pairs))
