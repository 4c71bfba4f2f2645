"""The paper's four claims checked against our metrics records: every verdict with its effect, its 95%
interval and the smallest effect it could have detected, and the tokens the pruned start is worth.

    result = check_claims({"equal_tokens": rec, "token_scaling": rec, "ratio_sweep": rec})
    result["claims"][0]["verdict"]   # "supported" | "contradicted" | "no effect larger than X" | "not tested (...)"
    result["claims"][1]["per_method"][0]["catch_up"]   # D_eff per budget (pvs.catchup)
    jsonable(result)                 # -> claims.json; pvs.report_claims.claims_markdown -> claims.md

Sign convention everywhere: Δ = loss(scratch) - loss(pruned), so Δ > 0 means pruning helps. Estimates are
linear contrasts of arm means (pvs.stats.contrast): each arm's own seeds give its noise, an arm with one
seed leaves its comparison "not tested", runs shared by methods count once, and the evaluation-text
variance is added where rows carry val_blocks. Claims 2 and 3 are endpoint contrasts, Δ(last) - Δ(first)
along tokens or achieved ratio; the slope is a secondary view. Records are plain dicts (pvs.study).
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from pvs.catchup import catch_up
from pvs.chance import accuracy_gap
from pvs.stats import (CONTRADICTED, NO_EFFECT, NOT_TESTED, SUPPORTED, Estimate, contrast, kind, not_tested,
                       overall, run_id)

__all__ = ["SUPPORTED", "CONTRADICTED", "NO_EFFECT", "NOT_TESTED", "Estimate", "kind", "check_claims", "jsonable"]

PAPER_P_TOKENS = 200e9
# the paper's Figure 1 (read from the published image, about ±0.01): tokens (B) -> (scratch S_N, pruned P200-R_N)
PAPER_FIG1_LOSS = {
    "minitron-depth": {10: (3.09, 2.70), 30: (2.81, 2.59), 50: (2.64, 2.54), 250: (2.49, 2.46), 500: (2.47, 2.43)},
    "minitron-width": {10: (3.11, 2.62), 30: (2.80, 2.47), 50: (2.70, 2.47), 250: (2.46, 2.39), 500: (2.44, 2.35)},
}
PAPER_FIG1_DELTA = {"minitron-depth": (0.39, 0.04), "minitron-width": (0.49, 0.09)}  # printed on the figure
PAPER_BASE_LOSS = 2.40
# Figure 1 right: average accuracy (%) of pruned P200-R50 and scratch S250
PAPER_FIG1_ACC = {"minitron-depth": (64.4, 66.2), "sheared-llama": (65.9, 65.3),
                  "sparsegpt-2:4": (66.7, 67.1), "sparsegpt": (67.5, 66.3)}
NO_BIGRAM = "not testable (no bigram baseline in the record)"


# ------------------------------------------------------------------ reading rows


def index(rows: list[dict]) -> dict:
    """{(variant, ratio, arm, budget): {seed: row}} of the training arms (the parent row is left out)."""
    idx: dict = defaultdict(dict)
    for r in rows:
        if r.get("arm") in ("P-R", "S"):
            idx[(r["variant"], float(r["ratio"]), r["arm"], r["budget"])][int(r.get("seed") or 0)] = r
    return idx


def arm(idx: dict, key: tuple) -> list[dict]:
    """The rows of one arm, one per seed, in seed order."""
    return [r for _, r in sorted(idx.get(key, {}).items())]


def losses(idx: dict, key: tuple) -> dict:
    return {s: float(r["val_loss"]) for s, r in idx.get(key, {}).items()}


def mean_of(idx: dict, key: tuple, field: str = "val_loss") -> float | None:
    vals = [r.get(field) for r in idx.get(key, {}).values() if r.get(field) is not None]
    return float(np.mean(vals)) if vals else None


def budget_frac(label: str) -> float:
    """'0.05P' -> 0.05 (token-scaling budgets are fractions of the parent's pretraining tokens P)."""
    return float(label[:-1]) if label.endswith("P") and label[:-1].replace(".", "", 1).isdigit() else math.nan


def gap(idx: dict, scratch_key: tuple, pruned_key: tuple) -> Estimate:
    """Δ = loss(scratch arm) - loss(pruned arm)."""
    return contrast([(1.0, arm(idx, scratch_key)), (-1.0, arm(idx, pruned_key))])


def _granularity(idx: dict, variant: str) -> str:
    for (v, _, _, _), seeds in idx.items():
        if v == variant:
            return next(iter(seeds.values())).get("granularity") or "?"
    return "?"


def _ordered(variants, rec: dict, *lists: str) -> list[str]:
    study = (rec.get("config") or {}).get("study", {})
    listed = [v for name in lists for v in study.get(name, [])]
    return sorted(variants, key=lambda v: (listed.index(v) if v in listed else len(listed), v))


def distinct_ratios(idx: dict, variant: str) -> tuple[list[dict], list[str]]:
    """The variant's nominal ratios grouped by the shape they reach: [{"ratio" (the lowest nominal ratio of the
    group, whose arms are used), "achieved", "merged" (the other nominal ratios)}], and a note per merge.
    Merged ratios' runs are not extra seeds: the same shape and seed trains (nearly) the same model."""
    groups: dict = {}
    for r in sorted({k[1] for k in idx if k[0] == variant}):
        pr = [x.get("achieved_ratio") for (v, rr, a, _), s in idx.items() if v == variant and rr == r and a == "P-R"
              for x in s.values()]
        achieved = float(np.mean([a for a in pr if a is not None])) if any(a is not None for a in pr) else r
        groups.setdefault(round(achieved, 4), []).append((r, achieved))
    out, notes = [], []
    for members in groups.values():
        (r, achieved), rest = members[0], [m[0] for m in members[1:]]
        out.append({"ratio": r, "achieved": achieved, "merged": rest})
        if rest:
            notes.append(f"{variant}: ratios {', '.join(f'{x:g}' for x in [r, *rest])} reach the same shape "
                         f"(achieved {achieved:.3f}); counted once, with the arms of ratio {r:g}")
    return sorted(out, key=lambda g: g["achieved"]), notes


def _distinct_scratch(arms: list[list[dict]]) -> tuple[int, int]:
    """(distinct scratch arms, distinct scratch runs) among the given arms (methods may share them)."""
    ids = [frozenset(run_id(r) for r in a) for a in arms if a]
    return len(set(ids)), len(set().union(*ids)) if ids else 0


def _mean_contrast(pairs: list[tuple[list[dict], list[dict]]], what: str) -> Estimate | None:
    """Mean of Δ over methods; a scratch arm two methods share enters once with both coefficients."""
    if not pairs:
        return None
    k = len(pairs)
    return contrast([t for s, p in pairs for t in ((1.0 / k, s), (-1.0 / k, p))], what)


def said(e: Estimate, verdict: str) -> str:
    """An estimate and its verdict in words ('+0.824 ± 0.192 (MDE 0.25) → supported')."""
    return e.text() if kind(verdict) == NOT_TESTED else f"{e.text()} → {verdict}"


def _verdict_counts(per: list[dict], key: str = "verdict") -> str:
    tested = [m for m in per if kind(m[key]) != NOT_TESTED]
    counts = {k: sum(kind(m[key]) == k for m in tested) for k in (SUPPORTED, CONTRADICTED, NO_EFFECT)}
    head = f"{len(tested)} of {len(per)} methods tested"
    return head if not tested else (f"{head}: {counts[SUPPORTED]} supported, {counts[CONTRADICTED]} contradicted, "
                                    f"{counts[NO_EFFECT]} with no effect beyond noise")


# ------------------------------------------------------------------ claim 1


def claim_equal_tokens(rec: dict) -> dict:
    idx = index(rec.get("rows") or [])
    pairs = {v: ((v, r, "S", "N"), (v, r, "P-R", "N")) for (v, r, a, b) in idx if a == "P-R" and b == "N"
             and idx.get((v, r, "S", "N"))}
    per = []
    for v in _ordered(pairs, rec, "methods"):
        s, p = pairs[v]
        e = gap(idx, s, p)
        per.append({"method": v, "ratio": s[1], "granularity": _granularity(idx, v), "delta": e,
                    "verdict": e.verdict()})
    tested = [m for m in per if kind(m["verdict"]) != NOT_TESTED]
    n_arms, n_runs = _distinct_scratch([arm(idx, pairs[m["method"]][0]) for m in tested])
    pooled = _mean_contrast([(arm(idx, pairs[m["method"]][0]), arm(idx, pairs[m["method"]][1])) for m in tested],
                            f"mean Δ_N of {len(tested)} tested methods; ")
    scope = _verdict_counts(per) + (f"; they rest on {n_arms} distinct S_N arm(s) ({n_runs} runs)" if tested else "")
    untested = [m["method"] for m in per if kind(m["verdict"]) == NOT_TESTED]
    text = (f"Δ_N = loss(S_N) − loss(P-R_N) per method at equal training tokens ({scope}). "
            + "; ".join(f"{m['method']} {said(m['delta'], m['verdict'])}" for m in per) + "."
            + (f" Mean over the tested methods: {pooled.text()} ({pooled.basis})." if pooled and len(tested) > 1
               else "") + (f" Not tested: {', '.join(untested)}." if untested else "")
            + (f" Basis: {tested[0]['delta'].basis}." if len(tested) == 1 else ""))
    return {"id": 1, "name": "pruning beats scratch at equal training tokens",
            "paper": "P200-R_N beats S_N for every method (Figure 1 left; Δ 0.39 -> 0.04 depth, 0.49 -> 0.09 width)",
            "verdict": overall([m["verdict"] for m in per], [m["delta"].mde for m in per]), "scope": scope,
            "per_method": per, "pooled": pooled, "text": text,
            "effect": "; ".join(f"{m['method']} {m['delta'].short()}" for m in per) or "no data"}


# ------------------------------------------------------------------ claims 2 and 3


def _points(idx: dict, keys: list[tuple], x_of) -> tuple[list[dict], list[tuple]]:
    """Per (variant, ratio, budget, achieved): Δ and the arm means; and the (scratch, pruned) arms."""
    pts, arms = [], []
    for v, r, b, achieved in keys:
        s_key, p_key = (v, r, "S", b), (v, r, "P-R", b)
        tokens = mean_of(idx, p_key, "train_tokens")
        s, p = losses(idx, s_key), losses(idx, p_key)
        pts.append({"ratio": r, "achieved": achieved, "budget": b, "tokens": tokens, "x": x_of(achieved, tokens),
                    "delta": gap(idx, s_key, p_key), "scratch": float(np.mean(list(s.values()))),
                    "pruned": float(np.mean(list(p.values()))), "scratch_by_seed": s, "pruned_by_seed": p})
        arms.append((arm(idx, s_key), arm(idx, p_key)))
    order = np.argsort([q["x"] for q in pts], kind="stable")
    return [pts[i] for i in order], [arms[i] for i in order]


def _endpoint_and_slope(pts: list[dict], arms: list[tuple], what: str) -> tuple[Estimate, Estimate | None]:
    """Δ(last x) - Δ(first x), the claim's test; and the least-squares slope of Δ vs x, as a second view (a
    linear contrast of the same arms, so it carries their seed and text noise, not a residual scatter)."""
    if len(pts) < 2:
        return not_tested("one point: nothing to contrast"), None
    (s0, p0), (s1, p1) = arms[0], arms[-1]
    end = contrast([(1.0, s1), (-1.0, p1), (-1.0, s0), (1.0, p0)], "Δ(last) − Δ(first); ")
    x = np.array([q["x"] for q in pts])
    if np.ptp(x) == 0:
        return end, None
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    slope = contrast([t for wi, (s, p) in zip(w, arms) for t in ((float(wi), s), (-float(wi), p))],
                     f"slope per {what}; ")
    return end, slope


def _trend_method(v: str, idx: dict, keys: list[tuple], x_of, what: str, fit_catch_up: bool) -> dict:
    pts, arms = _points(idx, keys, x_of)
    end, slope = _endpoint_and_slope(pts, arms, what)
    item = {"method": v, "granularity": _granularity(idx, v), "points": pts, "endpoint": end, "slope": slope,
            "slope_unit": what, "verdict": end.verdict(expect_positive=False)}
    if fit_catch_up:
        item["catch_up"] = catch_up([q["tokens"] for q in pts], [q["scratch_by_seed"] for q in pts],
                                    [q["pruned_by_seed"] for q in pts])
    return item


def _endpoint_scratch(idx: dict, per: list[dict]) -> str:
    """'; they rest on k distinct scratch arms (n runs)': the S arms at the end points of the tested methods."""
    tested = [m for m in per if kind(m["verdict"]) != NOT_TESTED]
    if not tested:
        return ""
    arms = [arm(idx, (m["method"], q["ratio"], "S", q["budget"])) for m in tested
            for q in (m["points"][0], m["points"][-1])]
    n_arms, n_runs = _distinct_scratch(arms)
    return f"; they rest on {n_arms} distinct scratch arm(s) ({n_runs} runs)"


def _trend_claim(claim_id: int, name: str, paper: str, per: list[dict], along: str, at, idx: dict,
                 notes=()) -> dict:
    """A trend claim: per method, the endpoint contrast Δ(last) − Δ(first) along ``along`` (negative =
    shrinking; the test), and the slope (secondary); ``at`` names a point."""
    def one(m):
        a, b = m["points"][0], m["points"][-1]
        slope = f"; slope {m['slope'].text()} per {m['slope_unit']}" if m["slope"] else ""
        return (f"{m['method']}: Δ {a['delta'].value:+.3f} at {at(a)} → {b['delta'].value:+.3f} at {at(b)}, "
                f"Δ(last) − Δ(first) = {said(m['endpoint'], m['verdict'])}{slope}")
    scope = _verdict_counts(per) + _endpoint_scratch(idx, per)
    return {"id": claim_id, "name": name, "paper": paper, "scope": scope, "notes": list(notes),
            "verdict": overall([m["verdict"] for m in per], [m["endpoint"].mde for m in per]), "per_method": per,
            "effect": "; ".join(f"{m['method']} {m['endpoint'].short()}" for m in per) or "no data",
            "text": (f"Endpoint contrast Δ(last) − Δ(first) along {along} (negative = the advantage shrinks; "
                     f"{scope}). " + "; ".join(one(m) for m in per) + "." + "".join(f" {n}." for n in notes))}


def claim_token_trend(rec: dict) -> dict:
    idx = index(rec.get("rows") or [])
    groups: dict = defaultdict(list)
    for (v, r, a, b) in idx:
        if a == "P-R" and b != "P+N" and idx.get((v, r, "S", b)):
            groups[v].append((v, r, b, r))
    per = [_trend_method(v, idx, groups[v], lambda r, t: math.log10(t), "10x tokens", True)
           for v in _ordered(groups, rec, "scaling_methods", "methods")]
    return _trend_claim(2, "the advantage shrinks as training tokens grow",
                        "Δ falls from 0.39 to 0.04 (depth) and 0.49 to 0.09 (width) from 10B to 500B tokens",
                        per, "training tokens (lowest vs highest budget)", lambda q: q["budget"], idx)


def claim_ratio_trend(rec: dict) -> dict:
    idx = index(rec.get("rows") or [])
    per, notes = [], []
    for v in _ordered({k[0] for k in idx}, rec, "sweep_methods", "methods"):
        ratios, merged = distinct_ratios(idx, v)
        keys = [(v, g["ratio"], "N", g["achieved"]) for g in ratios
                if idx.get((v, g["ratio"], "P-R", "N")) and idx.get((v, g["ratio"], "S", "N"))]
        notes += merged
        if keys:
            per.append(_trend_method(v, idx, keys, lambda a, t: 10 * a, "+0.1 achieved ratio", False))
    return _trend_claim(3, "the advantage shrinks as the pruning ratio rises",
                        "the gap narrows with the ratio and nearly vanishes at 0.8 (numbers not published)",
                        per, "the achieved pruning ratio (lowest vs highest)",
                        lambda q: f"ratio {q['achieved']:.3f}", idx, notes)


# ------------------------------------------------------------------ claim 4


def parent_gate(rows: list[dict]) -> tuple[str | None, dict]:
    """Why the equal-total comparison cannot ask the paper's question (None: it can), and the numbers: the
    question assumes a trained parent, so the parent must at least match a count-based bigram model."""
    parents = [r for r in rows if r.get("arm") == "parent"]
    bigram = [(r.get("baselines") or {}).get("bigram") for r in parents]
    bigram = [b for b in bigram if b is not None]
    nums = {"parent_loss": float(np.mean([r["val_loss"] for r in parents])) if parents else None,
            "bigram_loss": float(np.mean(bigram)) if bigram else None,
            "unigram_loss": next(((r.get("baselines") or {}).get("unigram") for r in parents
                                  if (r.get("baselines") or {}).get("unigram") is not None), None)}
    if nums["parent_loss"] is None or nums["bigram_loss"] is None:
        return NO_BIGRAM, nums
    if nums["parent_loss"] > nums["bigram_loss"]:
        return (f"not testable at this tier (the parent's loss {nums['parent_loss']:.3f} is above its bigram "
                f"baseline {nums['bigram_loss']:.3f}: it is not a trained model yet)"), nums
    return None, nums


def _granularity_verdict(groups: dict) -> str:
    """Supported: sparse keeps an edge beyond noise while no coarse granularity does; contradicted: sparse
    falls behind beyond noise or a coarse one keeps an edge beyond noise; otherwise bounded by sparse's MDE."""
    fine, coarse = groups.get("sparse"), [groups[g] for g in ("depth", "width") if groups.get(g)]
    if fine is None or not coarse:
        return f"{NOT_TESTED} (needs a sparse and a depth or width method)"
    vs = [fine.verdict(), *(c.verdict() for c in coarse)]
    if any(kind(v) == NOT_TESTED for v in vs):
        return overall([v for v in vs if kind(v) == NOT_TESTED], [None])
    if kind(vs[0]) == CONTRADICTED or any(kind(v) == SUPPORTED for v in vs[1:]):
        return CONTRADICTED
    return SUPPORTED if kind(vs[0]) == SUPPORTED else vs[0]


def claim_granularity(rec: dict) -> dict:
    rows = rec.get("rows") or []
    idx = index(rows)
    per, arms = [], {}
    for v, r in ((v, r) for (v, r, a, b) in idx if a == "P-R" and b == "N" and idx.get((v, r, "S", "P+N"))):
        s, p = arm(idx, (v, r, "S", "P+N")), arm(idx, (v, r, "P-R", "N"))
        g = _granularity(idx, v)
        arms[v] = (s, p)
        per.append({"method": v, "ratio": r, "granularity": g, "delta_total": contrast([(1.0, s), (-1.0, p)]),
                    "unstructured": g == "sparse" and ":" not in v, "accuracy": accuracy_gap(s, p)})
    order = _ordered([m["method"] for m in per], rec, "methods")
    per.sort(key=lambda m: order.index(m["method"]))
    groups = {}
    for g, pick in (("depth", lambda m: m["granularity"] == "depth"), ("width", lambda m: m["granularity"] == "width"),
                    ("sparse", lambda m: m["granularity"] == "sparse"), ("sparse-unstructured",
                                                                         lambda m: m["unstructured"])):
        ms = [m["method"] for m in per if pick(m)]
        n_arms, n_runs = _distinct_scratch([arms[v][0] for v in ms])
        groups[g] = _mean_contrast([arms[v] for v in ms], f"mean of {len(ms)} {g} method(s) on {n_arms} distinct "
                                   f"S_{{P+N}} arms ({n_runs} runs); ")
    computed = _granularity_verdict(groups)
    gate, nums = parent_gate(rows)
    parts = [f"{g} {e.text()}" for g, e in groups.items() if e]
    if nums["bigram_loss"] is None:
        gate_text = f" Gate: {gate} (parent loss {_num(nums['parent_loss'])})"
    else:
        gate_text = (f" Gate: parent loss {_num(nums['parent_loss'])} vs its bigram baseline "
                     f"{_num(nums['bigram_loss'])}: " + (gate if gate else "passed"))
    gate_text += f"; the comparison above reads '{computed}'." if gate else "."
    return {"id": 4, "name": "at equal total tokens fine-grained pruning keeps its edge, coarse is matched or beaten",
            "paper": ("S250 vs P200-R50: SparseGPT-U 66.3 vs 67.5 (pruned ahead), Minitron-Depth 66.2 vs 64.4 "
                      "(scratch ahead)"),
            "verdict": gate or computed, "verdict_if_trained": computed, "gate": {"reason": gate, **nums},
            "per_method": per, "groups": groups,
            "effect": "; ".join(f"{g} {e.short()}" for g, e in groups.items() if e) or "no data",
            "scope": _verdict_counts([{"verdict": m["delta_total"].verdict()} for m in per]),
            "text": ("Δ_total = loss(S_{P+N}) − loss(P-R_N) pooled by granularity (positive = pruned still ahead): "
                     + "; ".join(parts) + ". Supported when sparse stays above 0 beyond noise while depth and width "
                     "do not (matched or beaten); contradicted when sparse falls below 0 or a coarse granularity "
                     "keeps an edge beyond noise." + gate_text)}


def _num(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def check_claims(records: dict) -> dict:
    """Every claim from the records {experiment: record}; a missing or skipped experiment gives 'not tested'."""
    empty = {"rows": []}
    eq = records.get("equal_tokens") or empty
    claims = [claim_equal_tokens(eq), claim_token_trend(records.get("token_scaling") or empty),
              claim_ratio_trend(records.get("ratio_sweep") or empty), claim_granularity(eq)]
    reference = {v: catch_up([t * 1e9 for t in tab], [{0: s} for s, _ in tab.values()],
                             [{0: p} for _, p in tab.values()]) for v, tab in PAPER_FIG1_LOSS.items()}
    return {"claims": claims, "paper_catch_up": reference}


JSON_DIGITS = 10
"""Significant digits of the numbers in claims.json: the same records give the same file on any x86-64 machine
(numpy's and scipy's last bits differ between CPUs; the claims are read to 3 digits)."""


def jsonable(obj):
    """The result with every Estimate as a plain dict and every number to JSON_DIGITS (for claims.json)."""
    if isinstance(obj, Estimate):
        return jsonable(obj.as_dict())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.{JSON_DIGITS}g}") if math.isfinite(obj) else None
    return obj
