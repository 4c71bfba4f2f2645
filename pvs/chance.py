"""Downstream accuracy against chance: an accuracy difference means something only between arms that
are above their tasks' chance level by more than their standard error allows.

    chance_of("piqa")                 # 0.5
    arm_accuracy(rows)                # {"mean", "se", "chance", "above_chance", "n_seeds"} or None
    accuracy_gap(scratch_rows, pruned_rows)   # S - P in points, or "at chance"

Rows are metrics-record rows with row["downstream"][task] = {value, stderr, n, n_total, metric} and
downstream_avg / downstream_avg_stderr (the plain mean over the paper tasks, pvs.downstream).
"""
from __future__ import annotations

import math

import numpy as np

# chance accuracy of a uniform guess: 1 / number of answer choices of the task as lm-eval scores it
CHANCE = {"arc_easy": 0.25, "arc_challenge": 0.25, "openbookqa": 0.25, "hellaswag": 0.25, "sciq": 0.25,
          "piqa": 0.5, "boolq": 0.5, "winogrande": 0.5}
Z = 1.96  # "above chance" = more than 1.96 standard errors above it (a one-sided 2.5% test)
AT_CHANCE = "at chance"


def chance_of(task: str) -> float | None:
    return CHANCE.get(task)


def above(value: float | None, stderr: float | None, chance: float | None) -> bool | None:
    """True when ``value`` is above ``chance`` beyond Z standard errors; None when it cannot be told."""
    if value is None or chance is None:
        return None
    return value - chance > Z * (stderr or 0.0)


def average_chance(rows: list[dict]) -> float | None:
    """Chance level of downstream_avg: the mean of its tasks' chance levels (None if a task's is unknown)."""
    tasks = sorted({t for r in rows for t in (r.get("downstream") or {}) if t in CHANCE})
    return float(np.mean([CHANCE[t] for t in tasks])) if tasks else None


def arm_accuracy(rows: list[dict]) -> dict | None:
    """An arm's average accuracy over its seeds, its standard error and whether it is above chance.

    The s.e. is the per-row lm-eval s.e. averaged over seeds, not divided by √seeds: every seed is scored on
    the same questions, so item-sampling noise does not average out; with several seeds the seed spread is
    added."""
    rows = [r for r in rows if r.get("downstream_avg") is not None]
    if not rows:
        return None
    vals = np.array([float(r["downstream_avg"]) for r in rows])
    item_se = float(np.mean([float(r.get("downstream_avg_stderr") or 0.0) for r in rows]))
    seed_se = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else 0.0
    se = math.hypot(item_se, seed_se)
    ch = average_chance(rows)
    return {"mean": float(vals.mean()), "se": se, "chance": ch, "above_chance": above(float(vals.mean()), se, ch),
            "n_seeds": len(rows)}


def accuracy_gap(scratch: list[dict], pruned: list[dict]) -> dict | None:
    """Scratch minus pruned average accuracy in points with its 95% half-width, or the reason it is not read:
    ``status`` is "compared" (both arms above chance) or "at chance" (an arm is not above chance)."""
    s, p = arm_accuracy(scratch), arm_accuracy(pruned)
    if s is None or p is None:
        return None
    out = {"scratch": 100 * s["mean"], "pruned": 100 * p["mean"], "chance": None if s["chance"] is None
           else 100 * s["chance"], "scratch_minus_pruned_points": 100 * (s["mean"] - p["mean"]),
           "half95_points": 100 * Z * math.hypot(s["se"], p["se"]),
           "scratch_above_chance": s["above_chance"], "pruned_above_chance": p["above_chance"]}
    out["status"] = "compared" if s["above_chance"] and p["above_chance"] else AT_CHANCE
    return out


def gap_text(acc: dict) -> str:
    """'+1.9 ± 5.0 points' for arms above chance, else 'at chance (S 34.5%, P 33.1%, chance 34.4%)'."""
    d = f"{acc['scratch_minus_pruned_points']:+.1f} ± {acc['half95_points']:.1f} points"
    if acc["status"] == "compared":
        return d
    ch = "?" if acc["chance"] is None else f"{acc['chance']:.1f}%"
    return f"{AT_CHANCE} (S {acc['scratch']:.1f}%, P-R {acc['pruned']:.1f}%, chance {ch}; S − P {d} not read)"
