"""D_eff, the scratch budget that matches a pruned model's loss (pvs.catchup), on synthetic curves whose
crossing is known: interpolation, the bootstrap interval's coverage, and the extrapolation branches."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pvs.catchup import BEYOND, BELOW, catch_up, d_eff, fmt_tokens

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


def _seeds(mean: float, spread: float) -> list[float]:
    """Three seeds with this mean and sample s.d. ``spread``."""
    return [mean - spread, mean, mean + spread]


def test_the_interval_is_the_hand_computed_delta_method_interval():
    """Small seed noise around a known crossing: ln D_eff is nearly linear in the arm means there, so the
    bootstrap's 95% interval is ln D_eff ± t(df) · sqrt(Σ (∂ ln D_eff / ∂ mean_i)² se_i²), written out here for
    the bracketing pair of budgets (every other arm has no influence), df by Welch-Satterthwaite."""
    from scipy import stats
    sd, d_star = 0.006, 5.5e5
    scratch = [_seeds(scratch_loss(d), sd) for d in D]
    target = _seeds(scratch_loss(d_star), sd)
    fit = d_eff(D, scratch, target, n_boot=4000, seed=0)
    m_j, m_k, t = scratch_loss(D[1]), scratch_loss(D[2]), scratch_loss(d_star)
    span, gap = math.log(D[2] / D[1]), m_j - m_k
    ln_hat = math.log(D[1]) + span * (m_j - t) / gap
    assert math.log(fit["d_eff"]) == pytest.approx(ln_hat, abs=1e-9)
    grads = [span * (t - m_k) / gap ** 2, span * (m_j - t) / gap ** 2, -span / gap]  # m_j, m_k, target
    se = sd / math.sqrt(3)
    v = [(g * se) ** 2 for g in grads]
    df = sum(v) ** 2 / sum(x ** 2 / 2 for x in v)
    half = stats.t.ppf(0.975, df) * math.sqrt(sum(v))
    lo, hi = fit["ci95"]
    assert fit["ci_ends"] == [None, None]
    assert math.log(lo) == pytest.approx(ln_hat - half, abs=0.06 * half)  # bootstrap error ~2% of half
    assert math.log(hi) == pytest.approx(ln_hat + half, abs=0.06 * half)
    assert fit["interval"] == f"95%: {fmt_tokens(lo)} – {fmt_tokens(hi)}"


def test_the_first_budget_where_scratch_reaches_the_target_brackets_it():
    """A scratch curve that dips, rises and falls again: D_eff is read in the first bracket that reaches it."""
    losses = [5.0, 4.6, 4.9, 4.2]
    fit = d_eff(D, [[x] for x in losses], [4.8])
    assert fit["d_eff"] == pytest.approx(D[0] * (D[1] / D[0]) ** ((5.0 - 4.8) / (5.0 - 4.6)), rel=1e-9)
    assert fit["status"] == "interpolated between 100k and 300k"


def test_one_scratch_budget_gives_no_estimate():
    for tokens, scratch in (([1e5], [[5.0, 5.1, 4.9]]), ([1e5, 1e5], [[5.0, 5.1, 4.9], [4.8, 4.9, 4.7]])):
        fit = d_eff(tokens, scratch, [4.9, 5.0, 4.95])
        assert fit["d_eff"] is None and fit["ci95"] is None and not fit["extrapolation"]
        assert fit["status"] == "too few scratch budgets"
        assert fit["interval"] == "no interval: too few scratch budgets"


def test_catch_up_names_scratch_already_ahead_and_gives_no_multiplier():
    scratch = [{s: scratch_loss(d) + 0.01 * s for s in range(3)} for d in D]
    pruned = [{s: scratch_loss(D[0]) + 0.5 + 0.01 * s for s in range(3)} for _ in D]  # worse than any scratch
    per = catch_up(D, scratch, pruned)["per_budget"]
    for e, d in zip(per, D):
        assert e["d_eff"] is None and e["multiplier"] is None and e["pruned_tokens"] == d
        assert e["status"] == f"{BELOW} (100k): scratch already ahead; extrapolation"
        assert e["interval"] == "no interval: extrapolation"
