"""claims.md: the verdict of each of the paper's claims with its effect, interval and minimum detectable
effect, a paragraph per claim, and the effective tokens the pruned start is worth (D_eff).

    text = claims_markdown(check_claims(records), footer)
"""
from __future__ import annotations

from pvs.catchup import D_EFF_METHOD, fmt_tokens, interval_text
from pvs.chance import gap_text

VERDICTS = ("Verdicts: **supported** (the 95% interval lies on the paper's side of 0), **contradicted** (on the "
            "other side), **no effect larger than X** (the interval contains 0; X is the minimum detectable "
            "effect, the true effect this comparison finds with 80% power at a two-sided 5% level, so smaller "
            "effects are not ruled out), **not tested (reason)** (e.g. an arm has one seed, so its noise is "
            "unknown; nothing is borrowed from other arms).")


def _d_eff_rows(name: str, cu: dict | None, paper: bool = False) -> list[str]:
    """One table line per pruned budget of a method's catch-up result."""
    if not cu:
        return [f"| {name} | — | — | — | — | — | no data |"]
    out = []
    for e in cu["per_budget"]:
        interval = "none (published values have no seed noise)" if paper and e["d_eff"] is not None \
            else interval_text(e)
        d = "—" if e["d_eff"] is None else fmt_tokens(e["d_eff"])
        mult = "—" if e["multiplier"] is None else f"{e['multiplier']:.2f}"
        out.append(f"| {name} | {fmt_tokens(e['pruned_tokens'])} | {e['target_loss']:.3f} | {d} | {mult} | "
                   f"{interval} | {e['status']} |")
    return out


def _claim_section(c: dict) -> list[str]:
    lines = [f"## Claim {c['id']}: {c['name']} — {c['verdict']}", "", c["text"], ""]
    if c["id"] == 4 and any(m.get("accuracy") for m in c["per_method"]):
        acc = "; ".join(f"{m['method']} {gap_text(m['accuracy'])}" for m in c["per_method"] if m.get("accuracy"))
        lines += ["Average downstream accuracy, scratch S_{P+N} minus pruned P-R_N, read only where both arms are "
                  f"above chance: {acc}. Accuracy does not enter the verdict, which rests on the loss gap.", ""]
    return lines


def claims_markdown(result: dict, footer: str) -> str:
    """claims.md: one table of verdicts, a paragraph per claim, and the D_eff estimates."""
    lines = ["# The paper's claims, checked against our records", "",
             "Δ = loss(scratch) − loss(pruned), so Δ > 0 means pruning is ahead. Every estimate is a difference of "
             "arm means over seeds, shown as effect ± 95% interval (MDE = minimum detectable effect, 80% power); "
             "each arm's noise comes from its own seeds, plus the evaluation-text noise where the records carry "
             "per-block losses; a scratch run that several methods share is counted once. " + VERDICTS, "",
             "| # | claim | paper | ours (effect ± 95%, MDE) | tested | verdict |", "|---|---|---|---|---|---|"]
    for c in result["claims"]:
        lines.append(f"| {c['id']} | {c['name']} | {c['paper']} | {c['effect']} | {c.get('scope', '')} | "
                     f"**{c['verdict']}** |")
    lines.append("")
    for c in result["claims"]:
        lines += _claim_section(c)
    scaling = next(c for c in result["claims"] if c["id"] == 2)
    lines += ["## Beyond the paper: how many tokens is the pruned start worth?", "", D_EFF_METHOD, "",
              "| method | pruned budget D | P-R_D loss | D_eff | D_eff / D | 95% interval | status |",
              "|---|---|---|---|---|---|---|"]
    for m in scaling["per_method"]:
        lines += _d_eff_rows(m["method"], m.get("catch_up"))
    for v, cu in result["paper_catch_up"].items():
        lines += _d_eff_rows(f"paper {v}", cu, paper=True)
    lines += ["", "The 'paper' rows apply the same reading to the paper's Figure 1 values (tokens in the paper's "
              "units).", "", f"<sub>{footer}</sub>", ""]
    return "\n".join(lines)
