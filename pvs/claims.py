"""The paper's four claims checked against our metrics records, with effect sizes and 95% intervals,
and an estimate of the training budget at which scratch catches up with pruning.

    result = check_claims({"equal_tokens": rec, "token_scaling": rec, "ratio_sweep": rec})
    result["claims"][0]["verdict"]       # "supported" | "not supported" | "inconclusive (...)"
    result["claims"][1]["per_method"][0]["catch_up"]   # where scratch catches up (pvs.catchup)
    jsonable(result)                     # -> claims.json; pvs.report_tables.claims_markdown -> claims.md

Sign convention everywhere: Δ = loss(scratch) - loss(pruned), so Δ > 0 means pruning helps.
A comparison run with several seeds gets a t-interval over its per-seed differences (paired by
seed); a single-seed comparison borrows the seed spread of the headline method (the one pair of
arms the study repeats over seeds) and says so. Records are plain dicts (pvs.study.run_experiment).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from pvs.catchup import catch_up

SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
WITHIN_NOISE, NO_NOISE, NOT_TESTED = ("inconclusive (effect within noise)", "inconclusive (no noise estimate)",
                                      "not tested (no data)")
PAPER_P_TOKENS = 200e9
# paper-notes §6 (Figure 1, read from the pixels, about ±0.01): tokens (B) -> (scratch S_N, pruned P200-R_N)
PAPER_FIG1_LOSS = {
    "minitron-depth": {10: (3.09, 2.70), 30: (2.81, 2.59), 50: (2.64, 2.54), 250: (2.49, 2.46), 500: (2.47, 2.43)},
    "minitron-width": {10: (3.11, 2.62), 30: (2.80, 2.47), 50: (2.70, 2.47), 250: (2.46, 2.39), 500: (2.44, 2.35)},
}
PAPER_FIG1_DELTA = {"minitron-depth": (0.39, 0.04), "minitron-width": (0.49, 0.09)}  # printed on the figure
PAPER_BASE_LOSS = 2.40
# Figure 1 right: average accuracy (%) of pruned P200-R50 and scratch S250
PAPER_FIG1_ACC = {"minitron-depth": (64.4, 66.2), "sheared-llama": (65.9, 65.3),
                  "sparsegpt-2:4": (66.7, 67.1), "sparsegpt": (67.5, 66.3)}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    """Two-sided 95% Student-t quantile (the tabulated df at or below ``df``, so never too narrow)."""
    if df > 30:
        return 1.96
    return _T975[max(k for k in _T975 if k <= max(df, 1))]


@dataclass
class Estimate:
    """A value with a standard error and the degrees of freedom of its t-interval (se None: no noise estimate)."""

    value: float
    se: float | None
    df: int
    basis: str

    @property
    def half(self) -> float | None:
        return None if self.se is None else t975(self.df) * self.se

    def verdict(self, expect_positive: bool = True) -> str:
        """SUPPORTED when the interval lies on the expected side of 0, NOT_SUPPORTED when on the other."""
        if self.half is None:
            return NO_NOISE
        v = self.value if expect_positive else -self.value
        return SUPPORTED if v - self.half > 0 else NOT_SUPPORTED if v + self.half < 0 else WITHIN_NOISE

    def text(self, digits: int = 3) -> str:
        return f"{self.value:+.{digits}f}" + ("" if self.half is None else f" ± {self.half:.{digits}f}")

    def as_dict(self) -> dict:
        h = self.half
        return {"value": self.value, "ci95": None if h is None else [self.value - h, self.value + h],
                "se": self.se, "df": self.df, "basis": self.basis}


@dataclass
class Noise:
    """Seed-to-seed s.d. of a single-seed Δ, from the headline method's repeated arms."""

    sd: float | None
    df: int
    source: str


# ------------------------------------------------------------------ reading rows


def index(rows: list[dict]) -> dict:
    """{(variant, ratio, arm, budget): {seed: row}} of the training arms (the parent row is left out)."""
    idx: dict = defaultdict(dict)
    for r in rows:
        if r.get("arm") in ("P-R", "S"):
            idx[(r["variant"], float(r["ratio"]), r["arm"], r["budget"])][int(r.get("seed") or 0)] = r
    return idx


def losses(idx: dict, key: tuple) -> dict:
    return {s: float(r["val_loss"]) for s, r in idx.get(key, {}).items()}


def budget_frac(label: str) -> float:
    """'0.05P' -> 0.05 (token-scaling budgets are fractions of the parent's pretraining tokens P)."""
    return float(label[:-1]) if label.endswith("P") and label[:-1].replace(".", "", 1).isdigit() else math.nan


def headline_noise(rec: dict) -> Noise:
    """The s.d. over seeds of Δ_N = loss(S_N) - loss(P-R_N) for the headline method (or any method
    the record repeats over seeds), the noise yardstick of single-seed comparisons."""
    idx = index(rec.get("rows") or [])
    headline = (rec.get("config") or {}).get("study", {}).get("headline_method")
    best = None
    for (variant, ratio, arm, budget) in list(idx):
        if arm != "P-R" or budget != "N":
            continue
        p, s = losses(idx, (variant, ratio, "P-R", "N")), losses(idx, (variant, ratio, "S", "N"))
        d = [s[k] - p[k] for k in sorted(set(p) & set(s))]
        if len(d) >= 2 and (best is None or (variant == headline, len(d)) > (best[0] == headline, len(best[1]))):
            best = (variant, d)
    if best is None:
        return Noise(None, 0, "no method was run with several seeds")
    sd = float(np.std(best[1], ddof=1))
    n = len(best[1])
    return Noise(sd, n - 1, f"the seed spread of {best[0]} (s.d. {sd:.3g} of Δ_N over {n} seeds)")


def difference(scratch: dict, pruned: dict, noise: Noise) -> Estimate:
    """loss(scratch) - loss(pruned): paired over seeds when both arms share two or more, else with noise borrowed."""
    common = sorted(set(scratch) & set(pruned))
    if len(common) >= 2:
        d = np.array([scratch[k] - pruned[k] for k in common])
        return Estimate(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1,
                        f"paired over {len(d)} seeds")
    value = float(np.mean(list(scratch.values())) - np.mean(list(pruned.values())))
    if noise.sd is None:
        return Estimate(value, None, 0, "one seed and no seed spread to estimate noise")
    # noise.sd is for one seed per arm; with k and m seeds the variance scales by (1/k + 1/m) / 2
    se = noise.sd * math.sqrt((1 / len(scratch) + 1 / len(pruned)) / 2)
    return Estimate(value, se, noise.df, f"one seed; noise from {noise.source}")


def slope(x, points: list[Estimate], what: str) -> Estimate | None:
    """OLS slope of the points' values vs x; its uncertainty is the larger of the residual scatter and
    the points' own noise propagated through the fit."""
    x, y = np.asarray(x, float), np.array([p.value for p in points])
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    xc = x - x.mean()
    sxx = float((xc ** 2).sum())
    b = float((xc * y).sum() / sxx)
    options = []
    if len(x) > 2:
        res = y - (y.mean() + b * xc)
        options.append((float(math.sqrt((res ** 2).sum() / (len(x) - 2) / sxx)), len(x) - 2,
                        f"residual scatter of {len(x)} points"))
    if all(p.se is not None for p in points):
        options.append((float(math.sqrt(sum((xi / sxx) ** 2 * p.se ** 2 for xi, p in zip(xc, points)))),
                        min(p.df for p in points), "the points' seed noise"))
    if not options:
        return Estimate(b, None, 0, f"slope per {what}; two points and no noise estimate")
    se, df, basis = max(options, key=lambda o: t975(o[1]) * o[0])
    return Estimate(b, se, df, f"slope per {what}; interval from {basis}")


def overall(verdicts: list[str]) -> str:
    """All methods support -> supported; any contradicts -> not supported; otherwise inconclusive."""
    if not verdicts:
        return NOT_TESTED
    if all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if any(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    return NO_NOISE if all(v == NO_NOISE for v in verdicts) else WITHIN_NOISE


# ------------------------------------------------------------------ the four claims


def _granularity(idx: dict, variant: str) -> str:
    for (v, _, _, _), seeds in idx.items():
        if v == variant:
            return next(iter(seeds.values())).get("granularity") or "?"
    return "?"


def _mean(idx, key, field="val_loss"):
    vals = [r.get(field) for r in idx.get(key, {}).values() if r.get(field) is not None]
    return float(np.mean(vals)) if vals else None


def _pairs(rec: dict, scratch_budget: str) -> list[tuple]:
    """(variant, ratio, loss S_<budget> by seed, loss P-R_N by seed) of every method in the record."""
    idx = index(rec.get("rows") or [])
    listed = (rec.get("config") or {}).get("study", {}).get("methods", [])
    out = []
    for (v, r, arm, b) in sorted(idx, key=lambda k: (listed.index(k[0]) if k[0] in listed else len(listed), k)):
        s = losses(idx, (v, r, "S", scratch_budget))
        if arm == "P-R" and b == "N" and s:
            out.append((v, r, s, losses(idx, (v, r, "P-R", "N"))))
    return out


def claim_equal_tokens(rec: dict, noise: Noise) -> dict:
    idx = index(rec.get("rows") or [])
    per = [{"method": v, "ratio": r, "granularity": _granularity(idx, v), "delta": (e := difference(s, p, noise)),
            "verdict": e.verdict()} for v, r, s, p in _pairs(rec, "N")]
    verdict = overall([m["verdict"] for m in per])
    n_win = sum(m["verdict"] == SUPPORTED for m in per)
    bases = "; ".join(f"{b} ({', '.join(m['method'] for m in per if m['delta'].basis == b)})"
                      for b in dict.fromkeys(m["delta"].basis for m in per))
    text = (f"Δ_N = loss(S_N) - loss(P-R_N) per method at equal training tokens: pruned is better beyond noise for "
            f"{n_win} of {len(per)} methods" + (": " + "; ".join(f"{m['method']} {m['delta'].text()}" for m in per)
                                                  if per else "") + f". Intervals: {bases or 'none'}.")
    return {"id": 1, "name": "pruning beats scratch at equal training tokens",
            "paper": "P200-R_N beats S_N for every method (Figure 1 left; Δ 0.39 -> 0.04 depth, 0.49 -> 0.09 width)",
            "verdict": verdict, "per_method": per, "text": text,
            "effect": (f"{n_win}/{len(per)} methods; Δ_N {min(m['delta'].value for m in per):+.3f} .. "
                       f"{max(m['delta'].value for m in per):+.3f}") if per else "no data"}


def _trend(rec: dict, noise: Noise, x_of, what: str, fit_catch_up: bool) -> list[dict]:
    """Per method: Δ at every budget/ratio of the record (equal training tokens) and its slope vs x."""
    idx = index(rec.get("rows") or [])
    groups: dict = defaultdict(list)
    for (v, r, arm, b) in idx:
        if arm == "P-R" and idx.get((v, r, "S", b)) and b != "P+N":
            groups[v].append((r, b))
    study = (rec.get("config") or {}).get("study", {})
    listed = [*study.get("scaling_methods", []), *study.get("sweep_methods", []), *study.get("methods", [])]
    per = []
    for v, keys in sorted(groups.items(), key=lambda kv: (listed.index(kv[0]) if kv[0] in listed else 99, kv[0])):
        pts = []
        for r, b in keys:
            s, p = losses(idx, (v, r, "S", b)), losses(idx, (v, r, "P-R", b))
            tokens = _mean(idx, (v, r, "P-R", b), "train_tokens")
            pts.append({"ratio": r, "budget": b, "tokens": tokens, "x": x_of(r, tokens),
                        "delta": difference(s, p, noise), "scratch": float(np.mean(list(s.values()))),
                        "pruned": float(np.mean(list(p.values()))),
                        "scratch_by_seed": s, "pruned_by_seed": p})
        pts.sort(key=lambda q: q["x"])
        fit = slope([q["x"] for q in pts], [q["delta"] for q in pts], what)
        item = {"method": v, "granularity": _granularity(idx, v), "points": pts, "slope": fit,
                "verdict": fit.verdict(expect_positive=False) if fit else NOT_TESTED}
        if fit_catch_up:
            item["catch_up"] = catch_up([q["tokens"] for q in pts], [q["scratch_by_seed"] for q in pts],
                                        [q["pruned_by_seed"] for q in pts])
        per.append(item)
    return per


def _trend_claim(claim_id: int, name: str, paper: str, per: list[dict], subject: str, unit: str, short: str,
                 first_at, last_at, last_delta) -> dict:
    """A trend claim's record: per-method slopes of Δ_N along ``subject``, stated per ``unit`` (``short`` in the
    effect line); ``first_at``/``last_at`` name the end points, ``last_delta`` formats the last point's Δ."""
    text = "; ".join(f"{m['method']}: Δ {m['points'][0]['delta'].value:+.3f} at {first_at(m['points'][0])} -> "
                     f"{last_delta(m['points'][-1]['delta'])} at {last_at(m['points'][-1])}, slope "
                     f"{m['slope'].text()} per {unit} ({m['verdict']})" for m in per if m["slope"])
    return {"id": claim_id, "name": name, "paper": paper,
            "verdict": overall([m["verdict"] for m in per]), "per_method": per,
            "effect": ", ".join(f"{m['method']} {m['slope'].text()}/{short}" for m in per if m["slope"]) or "no data",
            "text": f"Slope of Δ_N vs {subject} (negative = shrinking). {text}."}


def claim_token_trend(rec: dict, noise: Noise) -> dict:
    per = _trend(rec, noise, lambda r, t: math.log10(t), "10x tokens", True)
    return _trend_claim(2, "the advantage shrinks as training tokens grow",
                        "Δ falls from 0.39 to 0.04 (depth) and 0.49 to 0.09 (width) from 10B to 500B tokens",
                        per, "log10(training tokens) per scaling method", "10x tokens", "10x",
                        first_at=lambda p: p["budget"], last_at=lambda p: p["budget"],
                        last_delta=lambda d: f"{d.value:+.3f}")


def claim_ratio_trend(rec: dict, noise: Noise) -> dict:
    per = _trend(rec, noise, lambda r, t: 10 * r, "+0.1 ratio", False)
    return _trend_claim(3, "the advantage shrinks as the pruning ratio rises",
                        "the gap narrows with the ratio and nearly vanishes at 0.8 (numbers not published)",
                        per, "pruning ratio per sweep method", "+0.1 ratio", "+0.1",
                        first_at=lambda p: f"ratio {p['ratio']:g}", last_at=lambda p: f"{p['ratio']:g}",
                        last_delta=lambda d: d.text())


def _pool(ests: list[Estimate], name: str) -> Estimate | None:
    if not ests:
        return None
    se = None if any(e.se is None for e in ests) else math.sqrt(sum(e.se ** 2 for e in ests)) / len(ests)
    return Estimate(float(np.mean([e.value for e in ests])), se, min(e.df for e in ests),
                    f"mean of {len(ests)} {name} method(s)")


def claim_granularity(rec: dict, noise: Noise) -> dict:
    idx = index(rec.get("rows") or [])
    per = []
    for v, r, s, p in _pairs(rec, "P+N"):
        e = difference(s, p, noise)
        acc_p = _mean(idx, (v, r, "P-R", "N"), "downstream_avg")
        acc_s = _mean(idx, (v, r, "S", "P+N"), "downstream_avg")
        se = [_mean(idx, k, "downstream_avg_stderr") for k in ((v, r, "P-R", "N"), (v, r, "S", "P+N"))]
        acc = None if acc_p is None or acc_s is None else {
            "scratch_minus_pruned_points": 100 * (acc_s - acc_p),
            "stderr_points": None if None in se else 100 * math.hypot(*se)}
        per.append({"method": v, "ratio": r, "granularity": _granularity(idx, v), "delta_total": e,
                    "unstructured": _granularity(idx, v) == "sparse" and ":" not in v, "accuracy": acc})
    groups = {g: _pool([m["delta_total"] for m in per if m["granularity"] == g], g)
              for g in ("depth", "width", "sparse")}
    groups["sparse-unstructured"] = _pool([m["delta_total"] for m in per if m["unstructured"]], "unstructured")
    fine, coarse = groups["sparse"], [groups[g] for g in ("depth", "width") if groups[g]]
    if fine is None or not coarse:
        verdict = NOT_TESTED
    else:
        fine_v, coarse_edge = fine.verdict(), [c.verdict() for c in coarse]
        if fine_v == NOT_SUPPORTED or SUPPORTED in coarse_edge:
            verdict = NOT_SUPPORTED
        elif fine_v == SUPPORTED:
            verdict = SUPPORTED
        else:
            verdict = NO_NOISE if NO_NOISE in [fine_v, *coarse_edge] else WITHIN_NOISE
    parts = [f"{g} {e.text()}" for g, e in groups.items() if e]
    return {"id": 4, "name": "at equal total tokens fine-grained pruning keeps its edge, coarse is matched or beaten",
            "paper": ("S250 vs P200-R50: SparseGPT-U 66.3 vs 67.5 (pruned ahead), Minitron-Depth 66.2 vs 64.4 "
                      "(scratch ahead)"),
            "verdict": verdict, "per_method": per, "groups": groups, "effect": "; ".join(parts) or "no data",
            "text": ("Δ_total = loss(S_{P+N}) - loss(P-R_N) pooled by granularity (positive = pruned still ahead): "
                     + "; ".join(parts) + ". Supported when sparse stays above 0 beyond noise while depth and width do "
                     "not (matched or beaten); not supported when sparse falls below 0 or a coarse granularity "
                     "keeps an edge beyond noise.")}


def check_claims(records: dict) -> dict:
    """Every claim from the records {experiment: record}; a missing or skipped experiment gives 'not tested'."""
    empty = {"rows": []}
    eq = records.get("equal_tokens") or empty
    noise = headline_noise(eq)
    claims = [claim_equal_tokens(eq, noise), claim_token_trend(records.get("token_scaling") or empty, noise),
              claim_ratio_trend(records.get("ratio_sweep") or empty, noise), claim_granularity(eq, noise)]
    reference = {v: catch_up([t * 1e9 for t in tab], [{0: s} for s, _ in tab.values()],
                             [{0: p} for _, p in tab.values()]) for v, tab in PAPER_FIG1_LOSS.items()}
    return {"noise": {"sd": noise.sd, "df": noise.df, "source": noise.source}, "claims": claims,
            "paper_catch_up": reference}


def jsonable(obj):
    """The result with every Estimate as a plain dict (for claims.json)."""
    if isinstance(obj, Estimate):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
