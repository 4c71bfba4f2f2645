"""How many training tokens the pruned initialization is worth: the effective budget D_eff at which
scratch reaches a pruned model's loss, read off the measured scratch curve.

    from pvs.catchup import catch_up, d_eff
    cu = catch_up(tokens, scratch_by_seed, pruned_by_seed)   # {seed: loss} per budget and arm
    cu["per_budget"][i]["d_eff"], ["ci95"], ["status"], ["extrapolation"]

D_eff for the pruned arm at budget D: where the scratch loss curve, linear in ln(tokens) between the two
measured budgets that bracket the pruned loss, reaches that loss. D_eff / D says how many scratch tokens
the pruned start is worth. Its 95% interval is a parametric bootstrap that redraws every arm's mean from
its own seeds (normal with its mean and s.e., widened to the t quantile of the estimate's few degrees of
freedom); an arm with one seed gives no interval. Outside the
measured budgets there is nothing to interpolate: D_eff is then reported as "beyond the largest measured
budget" or "below the smallest" (scratch is already ahead), labelled extrapolation, never an interval.
"""
from __future__ import annotations

import math

import numpy as np

from pvs.stats import t_quantile

BELOW = "below the smallest measured budget"
BEYOND = "beyond the largest measured budget"
N_BOOT = 4000

D_EFF_METHOD = (
    "D_eff is the scratch budget at which scratch reaches the pruned model's validation loss: linear "
    "interpolation in ln(tokens) between the two measured scratch budgets that bracket that loss (no curve is "
    "fitted and nothing is extrapolated). D_eff / D is how many scratch tokens the pruned start is worth at "
    "retraining budget D. The 95% interval is a parametric bootstrap: every arm's mean is redrawn from a normal with "
    "its own seeds' mean and standard error, widened by t/z for the few degrees of freedom those seeds give (no "
    "interval where an arm has one seed). The evaluation-text "
    "variance is left out here: the same text scores every arm, so it moves all losses together and hardly "
    f"moves where they meet. A pruned loss below every scratch loss is '{BEYOND}', one above them all "
    f"'{BELOW}' (scratch already ahead): both are extrapolations and get no interval.")


def _ln_cross(ln_d: np.ndarray, m: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Batched ln D_eff: rows of scratch means m [B, k] at budgets ln_d [k] against target losses [B];
    -inf where scratch is already at or below the target at the smallest budget, +inf where it never reaches
    it. The first budget whose loss reaches the target and its predecessor bracket the crossing."""
    below = m[:, 0] <= target
    hit = m[:, 1:] <= target[:, None]
    j = hit.argmax(1)
    rows = np.arange(len(m))
    hi, lo = m[rows, j], m[rows, j + 1]  # hi > target >= lo wherever hit.any()
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(hi > lo, (hi - target) / (hi - lo), 0.0)
    ln = ln_d[j] + frac * (ln_d[j + 1] - ln_d[j])
    ln = np.where(hit.any(1), ln, np.inf)
    return np.where(below, -np.inf, ln)


def _status(ln: float, tokens: np.ndarray) -> str:
    if ln == -math.inf:
        return f"{BELOW} ({fmt_tokens(tokens[0])}): scratch already ahead; extrapolation"
    if ln == math.inf:
        return f"{BEYOND} ({fmt_tokens(tokens[-1])}); extrapolation"
    j = int(np.searchsorted(tokens, math.exp(ln), side="left"))
    lo, hi = tokens[max(j - 1, 0)], tokens[min(j, len(tokens) - 1)]
    return f"interpolated between {fmt_tokens(lo)} and {fmt_tokens(hi)}"


def fmt_tokens(x: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _mean_se(losses: list[float]) -> tuple[float, float | None, int]:
    x = np.asarray(losses, float)
    return float(x.mean()), (float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else None), len(x)


def _slope(ln_of, mu: np.ndarray, i: int, h: float) -> float:
    """d ln D_eff / d mu[i] by central differences, one-sided where a step leaves the measured budgets."""
    step = np.eye(len(mu))[i] * h
    up, down, mid = ln_of(mu + step), ln_of(mu - step), ln_of(mu)
    if math.isfinite(up) and math.isfinite(down):
        return (up - down) / (2 * h)
    if math.isfinite(up) or math.isfinite(down):
        return (up - mid) / h if math.isfinite(up) else (mid - down) / h
    return 0.0


def _draw(rng, arms: list[tuple], ln_of, n_boot: int) -> np.ndarray:
    """[n_boot, arms] redrawn arm means: normal around each arm's mean with its own s.e., the s.e.s widened by
    t(df)/z, df being the Welch-Satterthwaite df of D_eff's variance (its sensitivity to each arm, from the
    point estimate): with three seeds per arm a plain normal covers too rarely, a Student-t per arm too often."""
    means = np.array([m for m, _, _ in arms])
    se = np.array([s for _, s, _ in arms])
    dof = np.array([n - 1 for _, _, n in arms], float)
    grad = np.array([_slope(ln_of, means, i, 1e-6 * max(s, 1e-12)) for i, s in enumerate(se)])
    v = (grad * se) ** 2
    df = v.sum() ** 2 / (v ** 2 / dof).sum() if (v ** 2).sum() > 0 else math.inf
    widen = t_quantile(0.975, df) / t_quantile(0.975, math.inf)
    return means[None] + rng.standard_normal((n_boot, len(means))) * (se * widen)[None]


def d_eff(tokens, scratch: list[list[float]], target: list[float], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """D_eff of one pruned arm (per-seed losses ``target``) on the scratch curve (per-seed losses per budget)."""
    D = np.asarray(tokens, float)
    order = np.argsort(D)
    D, scratch = D[order], [scratch[i] for i in order]
    arms = [_mean_se(s) for s in scratch]
    t_arm = _mean_se(target)
    t_mean = t_arm[0]
    m = np.array([a[0] for a in arms])
    out = {"target_loss": t_mean, "scratch_tokens": D.tolist(), "scratch_loss": m.tolist()}
    if len(D) < 2 or np.ptp(D) == 0:
        return {**out, "d_eff": None, "status": "too few scratch budgets", "extrapolation": False, "ci95": None,
                "interval": "no interval: too few scratch budgets"}
    ln_d = np.log(D)
    ln = float(_ln_cross(ln_d, m[None], np.array([t_mean]))[0])
    out.update(d_eff=math.exp(ln) if math.isfinite(ln) else None, status=_status(ln, D),
               extrapolation=not math.isfinite(ln), ci95=None, ci_ends=None)
    if not math.isfinite(ln):
        return {**out, "interval": "no interval: extrapolation"}
    if any(a[1] is None for a in [*arms, t_arm]):
        return {**out, "interval": "no interval: an arm has one seed (no noise estimate)"}
    ln_of = (lambda mu: float(_ln_cross(ln_d, mu[None, :-1], mu[-1:])[0]))
    draws = _draw(np.random.default_rng(seed), [*arms, t_arm], ln_of, n_boot)
    boot = np.sort(_ln_cross(ln_d, draws[:, :-1], draws[:, -1]))
    lo, hi = boot[int(0.025 * (n_boot - 1))], boot[int(math.ceil(0.975 * (n_boot - 1)))]
    ends = [BELOW if lo == -math.inf else None, BEYOND if hi == math.inf else None]
    out.update(ci95=[None if ends[0] else math.exp(lo), None if ends[1] else math.exp(hi)], ci_ends=ends,
               boot={"n": n_boot, "frac_below": float(np.mean(boot == -np.inf)),
                     "frac_beyond": float(np.mean(boot == np.inf))})
    return {**out, "interval": interval_text(out)}


def interval_text(cu: dict) -> str:
    """'95%: 310k – 620k', with an open end named ('95%: 310k – beyond the largest measured budget (1M)')."""
    if not cu.get("ci95"):
        return cu.get("interval", "no interval")
    (lo, hi), (e_lo, e_hi) = cu["ci95"], cu["ci_ends"]
    D = cu["scratch_tokens"]
    left = f"{BELOW} ({fmt_tokens(D[0])})" if e_lo else fmt_tokens(lo)
    right = f"{BEYOND} ({fmt_tokens(D[-1])})" if e_hi else fmt_tokens(hi)
    return f"95%: {left} – {right}"


def catch_up(tokens, scratch_by_seed: list[dict], pruned_by_seed: list[dict], n_boot: int = N_BOOT) -> dict:
    """D_eff of the pruned arm at every budget (tokens[i], with {seed: loss} dicts per arm) on the scratch curve."""
    D = [float(t) for t in tokens]
    scratch = [list(s.values()) for s in scratch_by_seed]
    per = []
    for i, (d, p) in enumerate(zip(D, pruned_by_seed)):
        e = d_eff(D, scratch, list(p.values()), n_boot, seed=i)
        e.update(pruned_tokens=d, multiplier=None if e["d_eff"] is None else e["d_eff"] / d)
        per.append(e)
    return {"tokens": D, "scratch": [float(np.mean(s)) for s in scratch],
            "pruned": [float(np.mean(list(p.values()))) for p in pruned_by_seed], "per_budget": per}
