"""The claim statistics (pvs.stats, pvs.claims, pvs.chance) on synthetic records whose effects and noise are
known: interval coverage with seed and evaluation-text noise, the endpoint contrasts, one-seed arms, shared
scratch arms, the claim-4 gate, merged sweep ratios and accuracy at chance. Effects and intervals are also
checked against the statistics written out by hand (helpers.hand_contrast)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import assert_estimate
from pvs import chance as K
from pvs import claims as C
from pvs import stats as S

BLOCKS, BLOCK_TOKENS = 20, 400


def row(arm, variant, budget, seed, loss, ratio=0.5, tokens=1000, blocks=None, run=None, gran="depth", **kw):
    """A metrics-record row; ``blocks``: per-block losses (mean = loss) stored as val_blocks."""
    r = {"arm": arm, "variant": variant, "budget": budget, "ratio": ratio, "seed": seed, "train_tokens": tokens,
         "val_loss": float(loss), "granularity": gran, "achieved_ratio": ratio,
         "run": run or f"arms/{variant}-{arm}-{budget}-{ratio}-s{seed}", **kw}
    if blocks is not None:
        r["val_blocks"] = {"tokens": [BLOCK_TOKENS] * len(blocks), "loss_sum": [BLOCK_TOKENS * b for b in blocks]}
        r["val_loss"] = float(np.mean(blocks))
    return r


def record(rows, **study):
    return {"rows": rows, "config": {"study": {"methods": ["minitron-depth"], **study}}}


def _draw_equal_tokens(rng, effect, seed_sd, text_sd, blocks=True, seeds=3):
    """One study: scratch and pruned arms whose per-block losses share the text's difficulty; each arm also
    meets each block differently (text_sd, the evaluation-text noise of Δ) and each seed shifts its run."""
    base = rng.normal(5.0, 0.3, BLOCKS)  # the text's difficulty, shared by every run
    rows = []
    for arm, mu in (("S", effect), ("P-R", 0.0)):
        inter = rng.normal(0, text_sd, BLOCKS)  # how this arm meets each block
        for s in range(seeds):
            loss = base + mu + inter + rng.normal(0, seed_sd)
            rows.append(row(arm, "minitron-depth", "N", s, loss.mean(), blocks=loss if blocks else None))
    return record(rows)


@pytest.mark.parametrize("blocks", [True, False])
def test_interval_covers_a_known_effect_in_95_percent_of_draws(blocks):
    """Known effect 0.05, seed s.d. 0.02 and text noise twice as large in variance: with val_blocks the 95%
    interval covers 0.05 in ~95% of 400 draws; without them (text noise ignored) it covers too rarely."""
    rng = np.random.default_rng(7)
    effect, hits, n = 0.05, 0, 400
    seed_sd = 0.02
    text_sd = seed_sd * math.sqrt(2 * BLOCKS / 3)  # text variance of Δ (2 text_sd²/B) = 2 x seed's (2 seed_sd²/3)
    for _ in range(n):
        rec = _draw_equal_tokens(rng, effect, seed_sd, text_sd)
        if not blocks:
            for r in rec["rows"]:
                r.pop("val_blocks")
        d = C.claim_equal_tokens(rec)["per_method"][0]["delta"]
        hits += abs(d.value - effect) <= d.half
    coverage = hits / n
    if blocks:
        assert 0.92 <= coverage <= 0.98, coverage
    else:
        assert coverage < 0.88, coverage  # the same estimate with the text noise left out undercovers (0.83)


def test_estimate_reports_effect_interval_and_mde():
    rng = np.random.default_rng(3)
    rec = _draw_equal_tokens(rng, 0.5, 0.02, 0.02)
    c1 = C.claim_equal_tokens(rec)
    d = c1["per_method"][0]["delta"]
    assert_estimate(d, [(1.0, arm_rows(rec, "minitron-depth", "S", "N")),
                        (-1.0, arm_rows(rec, "minitron-depth", "P-R", "N"))])
    assert c1["verdict"] == S.SUPPORTED and d.value == pytest.approx(0.5, abs=0.1)
    assert d.mde == pytest.approx((S.t_quantile(0.975, d.df) + S.t_quantile(0.8, d.df)) * d.se)
    assert "evaluation-text variance over 20 blocks" in d.basis and "seeds 3+3" in d.basis
    lo, hi = d.as_dict()["ci95"]
    assert lo < d.value < hi and hi - lo == pytest.approx(2 * d.half)
    # no effect: the verdict is bounded by the MDE, not a shrug
    flat = C.claim_equal_tokens(_draw_equal_tokens(np.random.default_rng(4), 0.0, 0.02, 0.0))
    e = flat["per_method"][0]["delta"]
    assert flat["verdict"].startswith(S.NO_EFFECT) and flat["verdict"] == f"{S.NO_EFFECT} {e.mde:.3g}"
    assert 0.02 < e.mde < 0.2
    # the opposite side
    rev = C.claim_equal_tokens(_draw_equal_tokens(np.random.default_rng(5), -0.3, 0.02, 0.02))
    assert rev["verdict"] == S.CONTRADICTED


def test_an_arm_with_one_seed_is_not_tested_and_nothing_is_borrowed():
    rows = [row(a, "minitron-depth", "N", s, 4.0 + (0.3 if a == "S" else 0) + 0.01 * s)
            for a in ("S", "P-R") for s in range(3)]
    rows += [row("S", "wanda", "N", 0, 4.4, gran="sparse"), row("P-R", "wanda", "N", 0, 4.0, gran="sparse")]
    c1 = C.claim_equal_tokens(record(rows, methods=["minitron-depth", "wanda"]))
    wanda = next(m for m in c1["per_method"] if m["method"] == "wanda")
    assert wanda["verdict"] == "not tested (one seed: no noise estimate)"
    assert wanda["delta"].se is None and wanda["delta"].as_dict()["ci95"] is None
    assert wanda["delta"].value == pytest.approx(0.4)
    assert c1["verdict"] == S.SUPPORTED and c1["scope"].startswith("1 of 2 methods tested")
    only = C.claim_equal_tokens(record([r for r in rows if r["variant"] == "wanda"], methods=["wanda"]))
    assert only["verdict"] == "not tested (one seed: no noise estimate)"


def test_shared_scratch_arms_count_once():
    """Two methods share one S_N arm (the same runs): the pooled mean Δ has the shared arm's variance once,
    and the scope says the methods rest on one scratch arm."""
    s = [4.30, 4.34, 4.26]
    pa, pb = [4.00, 4.02, 3.95], [4.10, 4.05, 4.12]
    rows = [row("S", v, "N", i, x, run=f"arms/scratch-S-s{i}") for v in ("minitron-depth", "shortgpt")
            for i, x in enumerate(s)]
    rows += [row("P-R", "minitron-depth", "N", i, x) for i, x in enumerate(pa)]
    rows += [row("P-R", "shortgpt", "N", i, x) for i, x in enumerate(pb)]
    c1 = C.claim_equal_tokens(record(rows, methods=["minitron-depth", "shortgpt"]))
    pooled = c1["pooled"]
    var = (lambda x: np.var(x, ddof=1) / 3)
    assert pooled.value == pytest.approx(np.mean(s) - (np.mean(pa) + np.mean(pb)) / 2)
    assert pooled.se ** 2 == pytest.approx(var(s) + (var(pa) + var(pb)) / 4)  # not (2 var(s) + ...) / 4
    assert "1 distinct S_N arm(s) (3 runs)" in c1["scope"]


def _scaling(gaps, sd=0.01, seeds=3, rng=None):
    """A token-scaling record whose Δ at budgets 0.05P, 0.25P, 1.25P is ``gaps``."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for (frac, g), tokens in zip(zip((0.05, 0.25, 1.25), gaps), (4e4, 2e5, 1e6)):
        ls = 7.0 - 0.4 * math.log(tokens / 4e4)
        for s in range(seeds):
            rows += [row("S", "minitron-depth", f"{frac}P", s, ls + rng.normal(0, sd), tokens=int(tokens)),
                     row("P-R", "minitron-depth", f"{frac}P", s, ls - g + rng.normal(0, sd), tokens=int(tokens))]
    return record(rows, scaling_methods=["minitron-depth"])


def test_claim2_endpoint_contrast_detects_a_planted_trend():
    c2 = C.claim_token_trend(_scaling((0.30, 0.25, 0.10)))
    m = c2["per_method"][0]
    assert c2["verdict"] == S.SUPPORTED and m["verdict"] == S.SUPPORTED
    lo, hi = m["endpoint"].as_dict()["ci95"]
    assert lo < -0.20 < hi and hi < 0  # covers the planted −0.20, entirely below 0
    assert m["slope"].value < 0 and m["slope"].se is not None  # the secondary view
    assert [q["budget"] for q in m["points"]] == ["0.05P", "0.25P", "1.25P"]
    assert c2["scope"].endswith("they rest on 2 distinct scratch arm(s) (6 runs)")
    # curvature is no longer noise: a gap that drops and then flattens is still a shrinking gap
    assert C.claim_token_trend(_scaling((0.30, 0.05, 0.05)))["verdict"] == S.SUPPORTED
    rising = _scaling((0.10, 0.20, 0.30))
    assert C.claim_token_trend(rising)["verdict"] == S.CONTRADICTED
    flat_rec = _scaling((0.2, 0.2, 0.2))
    flat = C.claim_token_trend(flat_rec)
    assert flat["verdict"].startswith(S.NO_EFFECT)
    for rec, claim in ((rising, C.claim_token_trend(rising)), (flat_rec, flat)):  # Δ(1.25P) − Δ(0.05P) by hand
        a = (lambda arm, b: arm_rows(rec, "minitron-depth", arm, b))  # noqa: E731
        assert_estimate(claim["per_method"][0]["endpoint"], [(1.0, a("S", "1.25P")), (-1.0, a("P-R", "1.25P")),
                                                             (-1.0, a("S", "0.05P")), (1.0, a("P-R", "0.05P"))])
    assert flat["verdict"] == f"{S.NO_EFFECT} {flat['per_method'][0]['endpoint'].mde:.3g}"
    assert C.claim_token_trend(_scaling((0.3, 0.2, 0.1), seeds=1))["verdict"].startswith("not tested (one seed")


def test_claim3_merges_ratios_that_reach_the_same_shape():
    rows = []
    for r, achieved, gap in ((0.5, 0.5, 0.4), (0.7, 0.75, 0.2), (0.8, 0.75, 0.2)):
        for s in range(3):
            for a, loss in (("S", 5.0), ("P-R", 5.0 - gap)):
                rows.append(row(a, "minitron-depth", "N", s, loss + 0.01 * s * (a == "S"), ratio=r,
                                run=f"{a}-{achieved}-s{s}"))
                rows[-1]["achieved_ratio"] = achieved
    c3 = C.claim_ratio_trend(record(rows, sweep_methods=["minitron-depth"]))
    m = c3["per_method"][0]
    assert [q["achieved"] for q in m["points"]] == [0.5, 0.75]
    assert len(m["points"][1]["pruned_by_seed"]) == 3  # ratio 0.8's runs are not extra seeds
    assert any("ratios 0.7, 0.8 reach the same shape" in n for n in c3["notes"])
    assert m["endpoint"].value == pytest.approx(-0.2) and c3["verdict"] == S.SUPPORTED


def _total_record(parent_loss, bigram):
    rows = [row("parent", None, None, 0, parent_loss, ratio=0.0, gran=None,
                **({"baselines": {"unigram": 7.5, "bigram": bigram}} if bigram is not None else {}))]
    for v, g, edge in (("minitron-depth", "depth", -0.1), ("sparsegpt", "sparse", 0.15)):
        for s in range(3):
            pr = 4.0 + 0.01 * s
            rows += [row("P-R", v, "N", s, pr, gran=g), row("S", v, "N", s, pr + 0.3 - 0.005 * s, gran=g),
                     row("S", v, "P+N", s, pr + edge + 0.004 * s, gran=g)]
    return record(rows, methods=["minitron-depth", "sparsegpt"])


def test_claim4_gate_trips_on_a_parent_worse_than_its_bigram():
    bad = C.claim_granularity(_total_record(6.2, 5.8))
    assert bad["verdict"].startswith("not testable at this tier")
    assert "6.200" in bad["verdict"] and "5.800" in bad["verdict"]
    assert bad["verdict_if_trained"] == S.SUPPORTED  # the numbers are still there
    assert S.kind(bad["verdict"]) == S.NOT_TESTED
    assert C.claim_granularity(_total_record(6.2, None))["verdict"] == C.NO_BIGRAM
    good_rec = _total_record(3.5, 5.8)
    good = C.claim_granularity(good_rec)
    assert good["verdict"] == S.SUPPORTED and good["gate"]["reason"] is None
    assert good["groups"]["sparse"].value == pytest.approx(0.15, abs=0.01)
    for group, v in (("sparse", "sparsegpt"), ("depth", "minitron-depth")):  # Δ_total by hand, one method each
        assert_estimate(good["groups"][group], [(1.0, arm_rows(good_rec, v, "S", "P+N")),
                                                (-1.0, arm_rows(good_rec, v, "P-R", "N"))])


def _with_accuracy(r, acc, se=0.016):
    r["downstream"] = {t: {"value": acc, "stderr": 0.04, "n": 100, "n_total": 1000, "metric": "acc"}
                       for t in K.CHANCE}
    r["downstream_avg"], r["downstream_avg_stderr"] = acc, se
    return r


def test_accuracy_differences_at_chance_are_not_read():
    chance = K.average_chance([_with_accuracy({}, 0.3)])
    assert chance == pytest.approx(0.34375)  # 5 four-choice and 3 two-choice tasks
    at = K.accuracy_gap([_with_accuracy({}, 0.35)], [_with_accuracy({}, 0.33)])
    assert at["status"] == K.AT_CHANCE and "at chance" in K.gap_text(at)
    above = K.accuracy_gap([_with_accuracy({}, 0.52)], [_with_accuracy({}, 0.47)])
    assert above["status"] == "compared" and above["scratch_minus_pruned_points"] == pytest.approx(5.0)
    assert K.above(0.30, 0.05, 0.25) is False and K.above(0.40, 0.05, 0.25) is True


def arm_rows(rec: dict, variant: str, arm: str, budget: str) -> list[dict]:
    """The rows of one arm of a synthetic record."""
    return [r for r in rec["rows"] if r["variant"] == variant and r["arm"] == arm and r["budget"] == budget]
