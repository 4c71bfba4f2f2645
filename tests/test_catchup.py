"""D_eff, the scratch budget that matches a pruned model's loss (pvs.catchup), on synthetic curves whose
crossing is known: interpolation, the bootstrap interval's coverage, and the extrapolation branches."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pvs.catchup import BEYOND, BELOW, catch_up, d_eff

D = [1e5, 3e5, 1e6, 3e6]
A, B = 6.0, 0.25  # scratch loss L(D) = A - B ln(D / D[0]): linear in ln D, so interpolation is exact


def scratch_loss(d: float) -> float:
    return A - B * math.log(d / D[0])


def test_interpolation_finds_a_planted_crossing():
    d_star = 5.5e5  # between the 2nd and 3rd budgets
    fit = d_eff(D, [[scratch_loss(d)] for d in D], [scratch_loss(d_star)])
    assert fit["d_eff"] == pytest.approx(d_star, rel=1e-9)
    assert fit["status"] == "interpolated between 300k and 1M" and not fit["extrapolation"]
    assert fit["ci95"] is None and "one seed" in fit["interval"]  # one seed per arm: no interval


def test_the_bootstrap_interval_covers_the_crossing():
    """Three seeds per arm with known noise: the 95% interval covers the true D_eff in about 95% of draws."""
    rng = np.random.default_rng(1)
    d_star, sd, n_draws = 5.5e5, 0.03, 200
    hits, widths = 0, []
    for i in range(n_draws):
        scratch = [list(scratch_loss(d) + rng.normal(0, sd, 3)) for d in D]
        target = list(scratch_loss(d_star) + rng.normal(0, sd, 3))
        fit = d_eff(D, scratch, target, n_boot=2000, seed=i)
        lo, hi = fit["ci95"]
        lo = lo if lo is not None else 0.0
        hi = hi if hi is not None else math.inf
        hits += lo <= d_star <= hi
        widths.append(math.log(hi / lo) if lo and math.isfinite(hi) else math.inf)
    coverage = hits / n_draws
    assert 0.91 <= coverage <= 0.985, coverage  # a plain normal bootstrap gives 0.87 here
    # and the interval is informative: a loss s.e. of ~0.017 against a slope of 0.25/ln-unit
    assert np.median(widths) < 1.0


def test_scratch_already_ahead_and_beyond_the_largest_budget_are_extrapolations():
    noisy = [[scratch_loss(d) + e for e in (-0.01, 0.0, 0.01)] for d in D]
    ahead = d_eff(D, noisy, [scratch_loss(D[0]) + 0.2 + e for e in (-0.01, 0, 0.01)])
    assert ahead["d_eff"] is None and ahead["extrapolation"] and ahead["ci95"] is None
    assert ahead["status"].startswith(BELOW) and "scratch already ahead" in ahead["status"]
    beyond = d_eff(D, noisy, [scratch_loss(D[-1]) - 0.3 + e for e in (-0.01, 0, 0.01)])
    assert beyond["d_eff"] is None and beyond["extrapolation"] and beyond["ci95"] is None
    assert beyond["status"].startswith(BEYOND) and beyond["interval"] == "no interval: extrapolation"


def test_an_interval_reaching_past_the_budgets_names_its_open_end():
    # a crossing close to the largest budget with wide noise: some bootstrap draws fall past it
    rng = np.random.default_rng(0)
    scratch = [list(scratch_loss(d) + rng.normal(0, 0.05, 3)) for d in D]
    fit = d_eff(D, scratch, [scratch_loss(2.6e6) + e for e in (-0.05, 0.0, 0.05)])
    assert fit["d_eff"] is not None
    assert fit["ci_ends"][1] == BEYOND and fit["ci95"][1] is None
    assert "beyond the largest measured budget (3M)" in fit["interval"]


def test_catch_up_reads_every_pruned_budget_and_is_deterministic():
    scratch = [{s: scratch_loss(d) + 0.01 * s for s in range(3)} for d in D]
    pruned = [{s: scratch_loss(3 * d) + 0.01 * s for s in range(3)} for d in D]  # worth 3x its tokens
    cu = catch_up(D, scratch, pruned)
    per = cu["per_budget"]
    assert [e["multiplier"] for e in per[:2]] == pytest.approx([3.0, 3.0], rel=1e-6)
    assert per[-1]["status"].startswith(BEYOND)  # 3 x the largest budget was never measured
    assert catch_up(D, scratch, pruned) == cu
