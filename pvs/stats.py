"""Estimates from replicated training runs: a linear contrast of arm means with a 95% interval and the
minimum effect it could detect, and the verdict that follows from them.

    est = contrast([(1.0, scratch_rows), (-1.0, pruned_rows)])   # Δ = loss(S) - loss(P-R)
    est.value, est.half, est.mde, est.verdict()                  # "supported" | "contradicted" |
                                                                  # "no effect larger than X" | "not tested (...)"

The seed is the unit of replication: every arm (the rows of one training configuration, one per seed)
brings its own seed-to-seed variance, and an arm with one seed has none, so a contrast that needs it is
"not tested" (nothing is borrowed from another arm). Runs are identified by their "run" path, so an
arm that two methods share (a scratch run of the same shape) enters a pooled contrast once, with its
coefficients added. Where every row carries ``val_blocks`` (the validation text cut into contiguous
blocks, the same blocks in every row), the variance of the contrast over a fresh draw of evaluation text
is added to the seed variance; degrees of freedom combine by Welch-Satterthwaite.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

SUPPORTED, CONTRADICTED = "supported", "contradicted"
NO_EFFECT, NOT_TESTED = "no effect larger than", "not tested"
ONE_SEED = "one seed: no noise estimate"
POWER = 0.80  # the minimum detectable effect is the effect found with this probability (two-sided 5%)


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile (the normal one for infinite df)."""
    return float(_st.norm.ppf(p) if not math.isfinite(df) else _st.t.ppf(p, max(df, 1e-9)))


def kind(verdict: str) -> str:
    """The verdict's kind without its numbers or reason: one of the four constants above."""
    for k in (SUPPORTED, CONTRADICTED, NO_EFFECT):
        if verdict.startswith(k):
            return k
    return NOT_TESTED


@dataclass
class Estimate:
    """A value with its standard error and degrees of freedom (se None: not tested, ``reason`` says why)."""

    value: float | None
    se: float | None
    df: float
    basis: str
    reason: str | None = None

    @property
    def half(self) -> float | None:
        """Half-width of the two-sided 95% t-interval."""
        return None if self.se is None else t_quantile(0.975, self.df) * self.se

    @property
    def mde(self) -> float | None:
        """The smallest true effect this estimate finds beyond 0 with 80% power (two-sided 5%)."""
        return None if self.se is None else (t_quantile(0.975, self.df) + t_quantile(POWER, self.df)) * self.se

    def verdict(self, expect_positive: bool = True) -> str:
        if self.se is None or self.value is None:
            return f"{NOT_TESTED} ({self.reason or 'no data'})"
        v, h = (self.value if expect_positive else -self.value), self.half
        if v - h > 0:
            return SUPPORTED
        if v + h < 0:
            return CONTRADICTED
        return f"{NO_EFFECT} {self.mde:.3g}"

    def text(self, digits: int = 3) -> str:
        """'+0.824 ± 0.196 (MDE 0.21)', or the bare value and why it has no interval."""
        if self.value is None:
            return f"not tested ({self.reason})"
        if self.se is None:
            return f"{self.value:+.{digits}f} (not tested: {self.reason})"
        return f"{self.value:+.{digits}f} ± {self.half:.{digits}f} (MDE {self.mde:.2g})"

    def short(self, digits: int = 3) -> str:
        """As text(), but a comparison without an interval says only 'not tested' (its verdict says why)."""
        return self.text(digits) if self.se is not None or self.value is None else \
            f"{self.value:+.{digits}f} (not tested)"

    def as_dict(self) -> dict:
        h = self.half
        return {"value": self.value, "ci95": None if h is None else [self.value - h, self.value + h],
                "se": self.se, "df": self.df if self.se is not None and math.isfinite(self.df) else None,
                "mde80": self.mde, "basis": self.basis, "reason": self.reason}


def not_tested(reason: str, value: float | None = None, basis: str = "") -> Estimate:
    return Estimate(value, None, 0, basis or reason, reason)


# ------------------------------------------------------------------ runs and arms


def run_id(row: dict) -> str:
    """What makes two rows the same training run: its run directory, else its defining fields."""
    if row.get("run"):
        return str(row["run"])
    shape = row.get("architecture") or row.get("params")
    mask = row.get("variant") if row.get("granularity") == "sparse" else None
    return json.dumps([row.get("arm"), row.get("budget"), row.get("seed"), row.get("train_tokens"), shape, mask],
                      sort_keys=True)


def arm_mean_se(rows: list[dict]) -> tuple[float, float | None, int]:
    """(mean, s.e. of the mean over seeds or None with one seed, number of seeds) of an arm's val_loss."""
    x = np.array([float(r["val_loss"]) for r in rows])
    return float(x.mean()), (float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None), len(x)


def _run_coefficients(terms: list[tuple[float, list[dict]]]) -> tuple[dict, dict]:
    """Coefficient of every distinct run (an arm's c spread over its seeds; shared runs add up) and one row per run."""
    coef: dict = {}
    rows: dict = {}
    for c, arm in terms:
        for r in arm:
            k = run_id(r)
            coef[k] = coef.get(k, 0.0) + c / len(arm)
            rows[k] = r
    return coef, rows


def _seed_components(terms, coef: dict) -> list[tuple[float, float]]:
    """(variance, df) per noise group: each run's seed variance is its arm's own; an arm listed twice (shared
    by two methods) is one group, so its runs are never counted as independent twice."""
    arms = sorted({tuple(sorted(run_id(r) for r in arm)): arm for _, arm in terms}.items(), key=lambda a: -len(a[0]))
    owner: dict = {}
    for ids, arm in arms:
        for k in ids:
            owner.setdefault(k, (ids, arm))
    out = []
    for ids, arm in arms:
        mine = [k for k in ids if owner[k][0] == ids]
        if not mine:
            continue
        s2 = float(np.var([float(r["val_loss"]) for r in arm], ddof=1))
        out.append((s2 * sum(coef[k] ** 2 for k in mine), len(arm) - 1))
    return out


def _text_component(coef: dict, rows: dict) -> tuple[float, float] | None:
    """(variance, df) of the contrast over a fresh draw of evaluation text, from the per-block losses of every
    run (a ratio estimator's linearised variance over blocks); None where some run has no val_blocks."""
    blocks = [rows[k].get("val_blocks") for k in coef]
    if not blocks or any(not b or not b.get("tokens") for b in blocks):
        return None
    n = len(blocks[0]["tokens"])
    if n < 2 or any(len(b["tokens"]) != n or len(b["loss_sum"]) != n for b in blocks):
        return None
    tok = np.array([b["tokens"] for b in blocks], float)
    rate = np.array([b["loss_sum"] for b in blocks], float) / np.maximum(tok, 1)
    w = tok.mean(0)  # block i is the same text in every row, so its weight is its token count
    g = np.array(list(coef.values())) @ rate  # the contrast block by block
    theta = float((w * g).sum() / w.sum())
    var = n / (n - 1) * float(((w * (g - theta)) ** 2).sum()) / float(w.sum()) ** 2
    return var, n - 1


def contrast(terms: list[tuple[float, list[dict]]], what: str = "") -> Estimate:
    """Σ c · mean(val_loss over the arm's seeds) over (c, rows of one arm) terms, with its seed variance
    (every arm its own, Welch) plus the evaluation-text variance, and their Satterthwaite df."""
    if not terms or any(not arm for _, arm in terms):
        return not_tested("no data")
    coef, rows = _run_coefficients(terms)
    value = float(sum(c * float(rows[k]["val_loss"]) for k, c in coef.items()))
    seeds = "+".join(str(len(arm)) for _, arm in terms)
    if any(len(arm) < 2 for _, arm in terms):
        return not_tested(ONE_SEED, value, f"{what}seeds {seeds}")
    comps = _seed_components(terms, coef)
    text = _text_component(coef, rows)
    seed_var = sum(v for v, _ in comps)
    basis = f"{what}seeds {seeds} ({len(coef)} distinct runs; each arm's own seed variance)"
    if text is None:
        basis += "; evaluation-text variance not included (no val_blocks in the rows)"
    else:
        comps.append(text)
        basis += (f"; + evaluation-text variance over {text[1] + 1} blocks "
                  f"({100 * text[0] / max(seed_var + text[0], 1e-300):.0f}% of the total)")
    var = sum(v for v, _ in comps)
    # Welch-Satterthwaite: the df of a sum of independently estimated variance components
    den = sum(v * v / d for v, d in comps if d > 0)
    df = var * var / den if den > 0 else float(min(d for _, d in comps))
    return Estimate(value, math.sqrt(var), df, basis)


def overall(verdicts: list[str], mdes: list[float | None]) -> str:
    """One verdict for a claim made for every method: contradicted if any tested method contradicts it,
    supported if all tested support it, else a bound (the largest undetectable effect among the rest)."""
    tested = [(v, m) for v, m in zip(verdicts, mdes) if kind(v) != NOT_TESTED]
    if not tested:
        reasons = sorted({v[len(NOT_TESTED) + 2:-1] for v in verdicts if v.startswith(NOT_TESTED + " (")})
        return f"{NOT_TESTED} ({'; '.join(reasons) or 'no data'})"
    if any(kind(v) == CONTRADICTED for v, _ in tested):
        return CONTRADICTED
    if all(kind(v) == SUPPORTED for v, _ in tested):
        return SUPPORTED
    return f"{NO_EFFECT} {max(m for v, m in tested if kind(v) == NO_EFFECT):.3g}"
