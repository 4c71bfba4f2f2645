"""The paper's tables from metrics records, as Markdown and CSV (the claims report: pvs.report_claims).

    t = equal_tokens_table(record)             # a Table
    t.markdown(footer), t.csv()                # footer: the provenance line of the records

Markdown shows "mean ± s.d." over seeds for losses and "Δ ± 95% half-width" for gaps (pvs.claims; no
interval where an arm has one seed); the CSV keeps them as separate numeric columns (<key>_sd,
<key>_ci95). Δ = loss(scratch) - loss(pruned). Accuracies within 1.96 s.e. of their task's chance
level are marked ° (pvs.chance).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

from pvs import chance as K
from pvs import claims as C
from pvs.catchup import fmt_tokens, interval_text

GRANULARITY_ORDER = ("depth", "width", "sparse")
ARMS = (("P-R", "N", "P-R_N"), ("S", "N", "S_N"), ("S", "P+N", "S_{P+N}"))
_PRETTY = {"minitron-depth": "Minitron Depth", "shortgpt": "ShortGPT", "minitron-width": "Minitron Width",
           "flap": "FLAP", "sheared-llama": "Sheared LLaMA", "sparsegpt": "SparseGPT", "wanda": "Wanda",
           "magnitude": "Magnitude"}


def _tokens(x) -> str:
    return "∞" if x is None else fmt_tokens(x)


def pretty(variant: str, granularity: str = "") -> str:
    """Display name: 'sparsegpt-2:4' -> 'SparseGPT 2:4'; a sparse variant with no N:M pattern (granularity
    'sparse', as its record rows say) -> 'SparseGPT U' (unstructured)."""
    base, _, pattern = variant.partition("-") if variant.split("-")[-1].count(":") else (variant, "", "")
    name = _PRETTY.get(base, base)
    if pattern:
        return f"{name} {pattern}"
    return f"{name} U" if granularity == "sparse" else name


def method_order(idx: dict, rec: dict) -> list[str]:
    """Methods of a record grouped depth / width / sparse, in the config's order within a group."""
    listed = [*(rec.get("config") or {}).get("study", {}).get("methods", [])]
    variants = sorted({k[0] for k in idx}, key=lambda v: (listed.index(v) if v in listed else len(listed), v))
    g = {v: C._granularity(idx, v) for v in variants}
    rank = {x: i for i, x in enumerate(GRANULARITY_ORDER)}
    return sorted(variants, key=lambda v: rank.get(g[v], len(rank)))


def arm_stat(idx: dict, key: tuple, get=lambda r: r.get("val_loss")) -> tuple[float | None, float | None, int]:
    """(mean, s.d. or None, n seeds) of a per-row quantity over an arm's seeds."""
    vals = [float(v) for v in (get(r) for r in idx.get(key, {}).values()) if v is not None]
    if not vals:
        return None, None, 0
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None), len(vals)


@dataclass
class Table:
    """A table: columns are (key, header, format); a row's <key>_sd / <key>_ci95 show as ± in Markdown."""

    name: str
    title: str
    columns: list[tuple[str, str, str]]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)

    def _cell(self, row: dict, key: str, fmt: str) -> str:
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        text = format(v, fmt) if fmt and isinstance(v, (int, float)) else str(v)
        pm = row.get(f"{key}_sd", row.get(f"{key}_ci95"))
        text = f"{text} ± {format(pm, fmt.lstrip('+'))}" if pm is not None and fmt else text
        return text + ("°" if row.get(f"{key}_at_chance") else "")

    def markdown(self, footer: str = "") -> str:
        lines = [f"### {self.title}", ""]
        if self.rows:
            lines.append("| " + " | ".join(h for _, h, _ in self.columns) + " |")
            lines.append("|" + "|".join("---" for _ in self.columns) + "|")
            lines += ["| " + " | ".join(self._cell(r, k, f) for k, _, f in self.columns) + " |" for r in self.rows]
        lines += [""] + [f"- {n}" for n in self.notes] + ([f"\n<sub>{footer}</sub>"] if footer else [])
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        keys = []
        for k, _, _ in self.columns:
            keys += [k] + [f"{k}{s}" for s in ("_sd", "_ci95", "_at_chance")
                           if any(r.get(f"{k}{s}") is not None for r in self.rows)]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(keys)
        for r in self.rows:
            w.writerow(["" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else
                                                     int(r[k]) if isinstance(r[k], bool) else r[k]) for k in keys])
        return buf.getvalue()


def _loss_cols(prefix: str = "") -> list:
    return [(f"loss_{tag}", f"{prefix}loss {label}", ".3f") for tag, (_, _, label) in zip(("pr", "sn", "spn"), ARMS)]


def _arm_losses(idx, v, r, row: dict) -> None:
    for tag, (arm, budget, _) in zip(("pr", "sn", "spn"), ARMS):
        row[f"loss_{tag}"], row[f"loss_{tag}_sd"], row[f"seeds_{tag}"] = arm_stat(idx, (v, r, arm, budget))


def _gaps(idx, v, r, row: dict) -> None:
    for key, budget in (("delta_n", "N"), ("delta_total", "P+N")):
        if idx.get((v, r, "S", budget)) and idx.get((v, r, "P-R", "N")):
            e = C.gap(idx, (v, r, "S", budget), (v, r, "P-R", "N"))
            row[key], row[f"{key}_ci95"] = e.value, e.half


def _ppl_source(rows: list[dict]) -> str | None:
    sources = sorted({k for r in rows for k in (r.get("ppl") or {})})
    return "wiki" if "wiki" in sources else (sources[0] if sources else None)


GAP_NOTE = ("Δ ± 95% interval (each arm's own seed noise, plus the evaluation-text noise where the records carry "
            "val_blocks); a bare Δ has no interval: one of its arms has one seed, so it is not tested.")


def equal_tokens_table(rec: dict) -> Table:
    rows_in, idx = rec["rows"], C.index(rec["rows"])
    src = _ppl_source(rows_in)
    ppl = (lambda r: (r.get("ppl") or {}).get(src))
    out = []
    parent = [r for r in rows_in if r.get("arm") == "parent"]
    if parent:
        out.append({"method": "parent", "loss_pr": float(np.mean([r["val_loss"] for r in parent])),
                    "ppl_pr": float(np.mean([ppl(r) for r in parent if ppl(r) is not None] or [math.nan]))})
    for v in method_order(idx, rec):
        r = next(k[1] for k in idx if k[0] == v)
        row = {"method": v, "granularity": C._granularity(idx, v), "ratio": r,
               "achieved_ratio": arm_stat(idx, (v, r, "P-R", "N"), lambda x: x.get("achieved_ratio"))[0]}
        _arm_losses(idx, v, r, row)
        _gaps(idx, v, r, row)
        row["seeds"] = "/".join(str(row.pop(f"seeds_{t}")) for t in ("pr", "sn", "spn"))
        for tag, (arm, budget, _) in zip(("pr", "sn", "spn"), ARMS):
            row[f"ppl_{tag}"] = arm_stat(idx, (v, r, arm, budget), ppl)[0]
            row[f"acc_{tag}"] = _pct(arm_stat(idx, (v, r, arm, budget), lambda x: x.get("downstream_avg"))[0])
        out.append(row)
    cols = [("method", "method", ""), ("granularity", "granularity", ""), ("achieved_ratio", "achieved ratio", ".3f"),
            ("seeds", "seeds", ""), *_loss_cols(), ("delta_n", "Δ_N = S_N − P-R_N", "+.3f"),
            ("delta_total", "Δ_total = S_{P+N} − P-R_N", "+.3f"),
            *[(f"ppl_{t}", f"ppl[{src}] {label}", ".1f") for t, (_, _, label) in zip(("pr", "sn", "spn"), ARMS)]]
    if any(r.get("acc_pr") is not None for r in out):
        cols += [(f"acc_{t}", f"avg acc % {label}", ".1f") for t, (_, _, label) in zip(("pr", "sn", "spn"), ARMS)]
    return Table("equal_tokens", "Equal training tokens (P-R_N vs S_N) and equal total tokens (S_{P+N})", cols, out,
                 ["Validation loss (the records' val_loss, nats/token): mean ± s.d. over seeds (seeds = "
                  "P-R_N/S_N/S_{P+N}); Δ > 0: pruning ahead. " + GAP_NOTE,
                  f"Perplexity on the held-out '{src}' source; per-source perplexities: equal_tokens_ppl."])


def _pct(x):
    return None if x is None else 100 * x


def equal_tokens_ppl_table(rec: dict) -> Table:
    idx = C.index(rec["rows"])
    sources = sorted({k for r in rec["rows"] for k in (r.get("ppl") or {})})
    parents = [r for r in rec["rows"] if r.get("arm") == "parent"]
    out = [{"method": "parent", "arm": "", **{s: float(np.mean([r["ppl"][s] for r in parents])) for s in sources}}
           ] if parents else []
    for v in method_order(idx, rec):
        r = next(k[1] for k in idx if k[0] == v)
        for arm, budget, label in ARMS:
            if idx.get((v, r, arm, budget)):
                out.append({"method": v, "arm": label, **{s: arm_stat(idx, (v, r, arm, budget),
                                                                     lambda x, s=s: (x.get("ppl") or {}).get(s))[0]
                                                          for s in sources}})
    return Table("equal_tokens_ppl", "Perplexity per held-out source (equal_tokens; mean over seeds)",
                 [("method", "method", ""), ("arm", "arm", ""), *[(s, s, ".1f") for s in sources]], out)


def _task_cell(runs: list[dict], task: str, row: dict) -> None:
    """Mean accuracy (%) of ``task`` over the arm's runs, marked at chance where it is not above chance."""
    got = [x["downstream"][task] for x in runs if task in x["downstream"]]
    if not got:
        row[task] = None
        return
    val, se = float(np.mean([e["value"] for e in got])), float(np.mean([e.get("stderr") or 0.0 for e in got]))
    row[task] = _pct(val)
    ok = K.above(val, se, K.chance_of(task))
    row[f"{task}_at_chance"] = None if ok is None else not ok


def equal_tokens_downstream_table(rec: dict) -> Table:
    idx = C.index(rec["rows"])
    tasks = sorted({t for r in rec["rows"] for t in (r.get("downstream") or {})})
    out = []
    for v in method_order(idx, rec):
        r = next(k[1] for k in idx if k[0] == v)
        for arm, budget, label in ARMS:
            runs = [x for x in idx.get((v, r, arm, budget), {}).values() if x.get("downstream")]
            if not runs:
                continue
            row = {"method": v, "arm": label, "seeds": len(runs)}
            for t in tasks:
                _task_cell(runs, t, row)
            acc = K.arm_accuracy(runs)
            row["avg"], row["avg_ci95"] = _pct(acc["mean"]), _pct(K.Z * acc["se"])
            row["avg_at_chance"] = None if acc["above_chance"] is None else not acc["above_chance"]
            n = sum(e["n"] for x in runs[:1] for e in x["downstream"].values())
            n_total = sum(e["n_total"] for x in runs[:1] for e in x["downstream"].values())
            row["docs"] = f"subsampled {n:,}/{n_total:,}" if n < n_total else f"full {n_total:,}"
            out.append(row)
    if out:  # the chance level of every column, first
        every = [x for rows in idx.values() for x in rows.values()]
        ch = K.average_chance(every)
        out.insert(0, {"method": "chance", "arm": "", **{t: _pct(K.chance_of(t)) for t in tasks}, "avg": _pct(ch)})
    notes = ["Accuracy (%) per task (the task's paper metric), average ± 95% (lm-eval s.e., and the seed spread "
             "where there are several seeds); 'subsampled n/N': documents evaluated of the task validation sets, "
             "summed over tasks.",
             f"° at chance: not above the task's chance level (first row) by more than {K.Z} s.e.; differences "
             "between such arms are not read as a result."]
    if not out:
        notes = ["Downstream tasks were not evaluated in these records (study.downstream_tasks empty or "
                 "downstream_limit < 0 at this tier); losses and perplexities stand in for accuracy."]
    return Table("equal_tokens_downstream", "Zero-shot downstream accuracy (equal_tokens)",
                 [("method", "method", ""), ("arm", "arm", ""), ("seeds", "seeds", ""),
                  *[(t, t, ".1f") for t in tasks], ("avg", "avg", ".1f"), ("docs", "docs", "")], out, notes)


def _d_eff_cell(cu: dict | None, tokens: float) -> tuple[str | None, float | None]:
    """(D_eff in words with its interval, D_eff / D) of the pruned arm at ``tokens``."""
    e = next((e for e in (cu or {}).get("per_budget", []) if e["pruned_tokens"] == tokens), None)
    if e is None:
        return None, None
    if e["d_eff"] is None:
        return e["status"], None
    return f"{_tokens(e['d_eff'])} ({interval_text(e)})", e["multiplier"]


def token_scaling_table(rec: dict, claim2: dict) -> Table:
    P = rec.get("pretrain_tokens")
    out = []
    for m in claim2["per_method"]:
        for q in m["points"]:
            frac = C.budget_frac(q["budget"])
            sd = (lambda d: float(np.std(list(d.values()), ddof=1)) if len(d) > 1 else None)
            d_eff, mult = _d_eff_cell(m.get("catch_up"), q["tokens"])
            out.append({"method": m["method"], "budget": q["budget"], "train_tokens": int(q["tokens"]),
                        "paper_equiv": f"{frac * C.PAPER_P_TOKENS / 1e9:g}B" if not math.isnan(frac) else None,
                        "loss_pr": q["pruned"], "loss_pr_sd": sd(q["pruned_by_seed"]), "loss_s": q["scratch"],
                        "loss_s_sd": sd(q["scratch_by_seed"]), "delta": q["delta"].value, "delta_ci95": q["delta"].half,
                        "seeds": f"{len(q['pruned_by_seed'])}/{len(q['scratch_by_seed'])}", "d_eff": d_eff,
                        "d_eff_over_d": mult})
        out.append({"method": m["method"], "budget": "Δ(last) − Δ(first)", "delta": m["endpoint"].value,
                    "delta_ci95": m["endpoint"].half, "d_eff": m["verdict"]})
    return Table("token_scaling", "Token scaling: pruned (P-R_D) vs scratch (S_D) at equal training tokens D",
                 [("method", "method", ""), ("budget", "budget", ""), ("paper_equiv", "paper (P=200B)", ""),
                  ("train_tokens", "training tokens", ",d"), ("loss_pr", "loss P-R_D", ".3f"),
                  ("loss_s", "loss S_D", ".3f"), ("delta", "Δ = S − P-R", "+.3f"), ("seeds", "seeds P-R/S", ""),
                  ("d_eff", "D_eff: scratch tokens to match P-R_D", ""), ("d_eff_over_d", "D_eff / D", ".2f")], out,
                 [f"Budgets are fractions of our P = {P:,} pretraining tokens; the paper's 10/30/50/250/500B are the "
                  "same fractions of its P = 200B." if P else "Budgets are fractions of P.", GAP_NOTE,
                  "Each method's last line is claim 2's test: the endpoint contrast and its verdict.",
                  "D_eff: pvs.catchup (interpolated between measured scratch budgets; extrapolation is named, "
                  "never given an interval)."])


def ratio_sweep_table(rec: dict) -> Table:
    idx = C.index(rec["rows"])
    out, notes = [], []
    for v in method_order(idx, rec):
        groups, merged = C.distinct_ratios(idx, v)
        notes += merged
        for g in groups:
            r = g["ratio"]
            row = {"method": v, "granularity": C._granularity(idx, v),
                   "ratio": ", ".join(f"{x:g}" for x in [r, *g["merged"]]), "achieved_ratio": g["achieved"]}
            _arm_losses(idx, v, r, row)
            _gaps(idx, v, r, row)
            row["seeds"] = "/".join(str(row.pop(f"seeds_{t}")) for t in ("pr", "sn", "spn"))
            out.append(row)
    return Table("ratio_sweep", "Pruning-ratio sweep: equal training tokens (N) and equal total tokens (P+N)",
                 [("method", "method", ""), ("granularity", "granularity", ""), ("ratio", "nominal ratio", ""),
                  ("achieved_ratio", "achieved", ".3f"), ("seeds", "seeds", ""), *_loss_cols(),
                  ("delta_n", "Δ_N", "+.3f"), ("delta_total", "Δ_total", "+.3f")], out,
                 ["Δ_N = loss(S_N) − loss(P-R_N); Δ_total = loss(S_{P+N}) − loss(P-R_N). " + GAP_NOTE,
                  "Rows are distinct achieved ratios: nominal ratios that reach the same shape are one point."]
                 + notes)


def released_parent_table(rec: dict) -> Table:
    cols = [("arm", "arm", ""), ("variant", "method", ""), ("parent", "parent", ""), ("budget", "budget", ""),
            ("ratio", "ratio", ".2f"), ("seed", "seed", ""), ("train_tokens", "training tokens", ",d"),
            ("val_loss", "val loss", ".3f"), ("downstream_avg", "avg acc", ".3f")]
    rows = [{k: r.get(k) for k, _, _ in cols} for r in rec["rows"]]
    return Table("released_parent", "Released vs custom parent", cols, rows)


def paper_vs_ours(scaling: dict | None, claim2: dict | None, equal: dict | None) -> tuple[Table, Table]:
    """The paper's Figure 1 numbers (pvs.claims.PAPER_FIG1_*, read from the figure) beside ours at the same
    fractions of P."""
    ours = {m["method"]: {round(C.budget_frac(q["budget"]) * 200, 6): q for q in m["points"]}
            for m in (claim2 or {}).get("per_method", [])}
    loss = []
    for v, tab in C.PAPER_FIG1_LOSS.items():
        first_p = next(iter(tab.values()))
        mine = ours.get(v, {})
        first_o = mine.get(min(mine), None) if mine else None
        for b, (s, p) in tab.items():
            q = mine.get(b)
            loss.append({"method": v, "paper_tokens": f"{b}B", "paper_s": s, "paper_p": p, "paper_delta": s - p,
                         "paper_rel": (s - p) / (first_p[0] - first_p[1]), "our_budget": q and q["budget"],
                         "our_tokens": q and int(q["tokens"]), "our_s": q and q["scratch"], "our_p": q and q["pruned"],
                         "our_delta": q and q["delta"].value, "our_delta_ci95": q and q["delta"].half,
                         "our_rel": q["delta"].value / first_o["delta"].value
                         if q and first_o and first_o["delta"].value else None})
    parent = [r["val_loss"] for r in (scaling or {}).get("rows", []) if r.get("arm") == "parent"]
    loss.append({"method": "parent (base model)", "paper_tokens": "200B", "paper_p": C.PAPER_BASE_LOSS,
                 "our_budget": "P", "our_tokens": (scaling or {}).get("pretrain_tokens"),
                 "our_p": float(np.mean(parent)) if parent else None})
    idx = C.index((equal or {}).get("rows") or [])
    acc = []
    for v, (p, s) in C.PAPER_FIG1_ACC.items():
        ratio = next((k[1] for k in idx if k[0] == v), None)
        a_p = _pct(arm_stat(idx, (v, ratio, "P-R", "N"), lambda x: x.get("downstream_avg"))[0])
        a_s = _pct(arm_stat(idx, (v, ratio, "S", "P+N"), lambda x: x.get("downstream_avg"))[0])
        lp, ls = (arm_stat(idx, (v, ratio, a, b))[0] for a, b in (("P-R", "N"), ("S", "P+N")))
        ours = K.accuracy_gap(C.arm(idx, (v, ratio, "S", "P+N")), C.arm(idx, (v, ratio, "P-R", "N")))
        acc.append({"method": v, "paper_p": p, "paper_s": s, "paper_s_minus_p": s - p, "our_acc_p": a_p,
                    "our_acc_s": a_s, "our_acc_s_minus_p": None if a_p is None or a_s is None else a_s - a_p,
                    "our_acc_s_minus_p_at_chance": None if ours is None else ours["status"] == K.AT_CHANCE,
                    "our_loss_delta_total": None if lp is None or ls is None else ls - lp})
    t1 = Table("paper_vs_ours", "Paper Figure 1 (left) vs ours: validation loss at equal training tokens",
               [("method", "method", ""), ("paper_tokens", "paper tokens", ""), ("paper_s", "paper S", ".2f"),
                ("paper_p", "paper P-R", ".2f"), ("paper_delta", "paper Δ", "+.2f"),
                ("paper_rel", "paper Δ/Δ₁₀B", ".2f"),
                ("our_budget", "our budget", ""), ("our_tokens", "our tokens", ",d"), ("our_s", "our S", ".3f"),
                ("our_p", "our P-R", ".3f"), ("our_delta", "our Δ", "+.3f"), ("our_rel", "our Δ/Δ_first", ".2f")],
               loss,
               ["Paper values read from Figure 1's pixels (±0.01); the Δ labels printed on it: " +
                ", ".join(f"{v} {a:.2f} → {b:.2f}" for v, (a, b) in C.PAPER_FIG1_DELTA.items()) +
                ". Absolute losses are not comparable (different model, data, tokenizer); compare the sign of Δ and "
                "how it shrinks (Δ relative to the smallest budget)."])
    t2 = Table("paper_vs_ours_acc", "Paper Figure 1 (right) vs ours: equal total tokens, P-R_N vs S_{P+N}",
               [("method", "method", ""), ("paper_p", "paper pruned %", ".1f"), ("paper_s", "paper scratch %", ".1f"),
                ("paper_s_minus_p", "paper S−P", "+.1f"), ("our_acc_p", "our pruned %", ".1f"),
                ("our_acc_s", "our scratch %", ".1f"), ("our_acc_s_minus_p", "our S−P", "+.1f"),
                ("our_loss_delta_total", "our Δ_total (loss)", "+.3f")], acc,
               ["Paper: average accuracy of P200-R50 vs S250; ours: average downstream accuracy of P-R_N vs S_{P+N} "
                "(— where not evaluated) and the loss gap Δ_total = loss(S_{P+N}) − loss(P-R_N) "
                "(> 0: pruned ahead).",
                f"° at chance: an arm's average is not above its chance level by more than {K.Z} s.e., so the "
                "difference is not read as a winner (pvs.chance)."])
    return t1, t2
