"""Seed statistics: t-intervals and paired tests against values computed by hand."""
from __future__ import annotations

import math

import pytest

from reports.stats import paired_comparison, t_interval


def test_t_interval_by_hand() -> None:
    mean, half = t_interval([1.0, 2.0, 3.0])  # s = 1, sem = 1/√3, t(0.975, 2) = 4.302653
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(t_interval([5.0])[1]) and t_interval([5.0])[0] == 5.0
    assert math.isnan(t_interval([])[0])


def test_paired_comparison_by_hand() -> None:
    method = {0: 50.0, 1: 60.0, 2: 58.0}
    baseline = {0: 10.0, 1: 30.0, 2: 20.0, 3: 99.0}  # seed 3 has no partner: ignored
    result = paired_comparison(method, baseline)
    # differences 40, 30, 38: mean 36, s = 5.2915, t = 36 / (5.2915 / √3) = 11.784, p(2 d.o.f.) = 0.00712
    assert result.n == 3 and result.difference == pytest.approx(36.0)
    assert result.p_value == pytest.approx(0.007124, rel=1e-3) and result.mark == "▲"
    worse = paired_comparison(baseline, method)
    assert worse.mark == "▼" and worse.p_value == pytest.approx(result.p_value)


def test_paired_comparison_degenerate_cases() -> None:
    assert math.isnan(paired_comparison({0: 1.0}, {0: 0.0}).p_value)  # one seed: untestable
    assert paired_comparison({0: 1.0}, {1: 0.0}).n == 0
    assert paired_comparison({0: 2.0, 1: 3.0}, {0: 2.0, 1: 3.0}).p_value == 1.0
    assert paired_comparison({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0}).mark == "▲"  # constant +1 on every seed
    assert paired_comparison({0: 50.0, 1: 52.0}, {0: 49.0, 1: 53.0}).mark == ""
