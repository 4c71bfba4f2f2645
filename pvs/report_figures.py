"""The paper's figures from metrics records and claim results (matplotlib, no pyplot state, seaborn style).

    fig = fig1_loss_vs_tokens(claim2, scaling_record)
    save(fig, out_dir, "fig1_loss_vs_tokens", footer)     # .png and .pdf, provenance line at the bottom

Colours mean the same thing in every figure: scratch = blue circles, pruned = purple squares (as in
the paper's Figure 1), the parent = a dashed purple line; granularities depth / width / sparse have
their own colours. Δ = loss(scratch) - loss(pruned) throughout (> 0: pruning ahead).
"""
from __future__ import annotations

import io
import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from pvs import chance as K
from pvs import claims as C
from pvs.catchup import BEYOND
from pvs.records import atomic_write_bytes
from pvs.report_tables import _tokens, arm_stat, method_order, pretty

SCRATCH = {"color": "#1f77b4", "marker": "o"}
PRUNED = {"color": "#7b2cbf", "marker": "s"}
GRAN_COLORS = {"depth": "#8c564b", "width": "#009E73", "sparse": "#D55E00"}
METHOD_MARKERS = "o^sDvP*X"


@contextmanager
def style():
    """Seaborn's whitegrid look, scoped to our figures (the notebook's own rcParams stay untouched)."""
    import seaborn as sns
    with mpl.rc_context({**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.1),
                         "axes.titleweight": "bold", "legend.frameon": True, "legend.framealpha": 0.9}):
        yield


def _freeze_layout(fig: Figure) -> None:
    """Round the solved axes positions: the layout solver's last bits vary with the process's earlier
    drawing (caches), and the PDF prints positions to 10 decimals, so unrounded it would differ between
    two renders in one process."""
    for ax in fig.axes:
        box = ax.get_position()
        ax.set_position([round(v, 6) for v in (box.x0, box.y0, box.width, box.height)])


def save(fig: Figure, out_dir: Path, name: str, footer: str) -> list[Path]:
    """Write <name>.png (150 dpi) and <name>.pdf with the provenance footer; byte-stable for equal input (no
    software version or time in the metadata, positions rounded)."""
    engine = fig.get_layout_engine()
    if engine is not None:  # keep a strip at the bottom free for the footer
        engine.set(rect=(0, 0.2 / fig.get_figheight(), 1, 1 - 0.2 / fig.get_figheight()))
    fig.text(0.005, 0.004, footer, fontsize=6, color="0.45", ha="left", va="bottom")
    paths = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=150, metadata=meta)
        if fig.get_layout_engine() is not None:
            fig.set_layout_engine("none")  # the layout is solved once; the PDF reuses it (half the drawing time)
            _freeze_layout(fig)
        atomic_write_bytes(out_dir / f"{name}.{ext}", buf.getvalue())
        paths.append(out_dir / f"{name}.{ext}")
    return paths


def _token_axis(ax, tokens, P: float | None) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(tokens))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _tokens(x)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training tokens D (log scale)")
    if P:  # the same fractions of P are the paper's budgets with P = 200B
        k = C.PAPER_P_TOKENS / P
        top = ax.secondary_xaxis("top", functions=(lambda t: t * k, lambda t: t / k))
        top.xaxis.set_major_locator(FixedLocator([t * k for t in sorted(set(tokens))]))
        top.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _tokens(x)))
        top.xaxis.set_minor_locator(NullLocator())
        top.set_xlabel("paper-equivalent tokens (P = 200B)", fontsize=8)
        top.tick_params(labelsize=7)


def _sd(d: dict):
    return float(np.std(list(d.values()), ddof=1)) if len(d) > 1 else 0.0


def _loss_panel(ax, m: dict, parent: float | None, P: float | None, annotate: bool = True) -> None:
    """Loss vs tokens of one method: scratch and pruned (± s.d. over seeds), the shaded gap, the parent."""
    pts = m["points"]
    x = np.array([q["tokens"] for q in pts])
    s, p = np.array([q["scratch"] for q in pts]), np.array([q["pruned"] for q in pts])
    ax.fill_between(x, p, s, color=PRUNED["color"], alpha=0.10, lw=0, label="gap Δ")
    ax.errorbar(x, s, yerr=[_sd(q["scratch_by_seed"]) for q in pts], label="scratch S_D", capsize=3, lw=1.8,
                ms=6, **SCRATCH)
    ax.errorbar(x, p, yerr=[_sd(q["pruned_by_seed"]) for q in pts], label="pruned P-R_D", capsize=3, lw=1.8,
                ms=6, **PRUNED)
    if parent is not None:
        ax.axhline(parent, ls="--", lw=1.3, color=PRUNED["color"], alpha=0.8, label="base model (parent)")
    if annotate:
        last = len(pts) - 1
        for i in (0, last):
            ax.annotate("", xy=(x[i], p[i]), xytext=(x[i], s[i]),
                        arrowprops={"arrowstyle": "<->", "color": "0.2", "lw": 1, "shrinkA": 0, "shrinkB": 0})
        ax.text(x[0] * 1.1, (s[0] + p[0]) / 2, f"Δ = {s[0] - p[0]:.2f}", ha="left", va="center", fontsize=9,
                fontweight="bold", color="0.15")
        # at the right the label sits inside the gap, left of its arrow (below it would hit the tick labels)
        ax.annotate(f"Δ = {s[last] - p[last]:.2f}", xy=(x[last], (s[last] + p[last]) / 2), xytext=(-6, 0),
                    textcoords="offset points", ha="right", va="center", fontsize=9, fontweight="bold",
                    color="0.15", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})
    _token_axis(ax, x, P)
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"{pretty(m['method'], m['granularity'])} (ratio {pts[0]['ratio']:g})")


def _parent_loss(rec: dict) -> float | None:
    vals = [r["val_loss"] for r in rec.get("rows", []) if r.get("arm") == "parent"]
    return float(np.mean(vals)) if vals else None


def fig1_loss_vs_tokens(claim2: dict, rec: dict) -> Figure:
    """Figure 1 left: minitron-depth and minitron-width, loss vs training tokens, Δ at both ends."""
    by = {m["method"]: m for m in claim2["per_method"]}
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, v in zip(axes, ("minitron-depth", "minitron-width")):
        if v in by:
            _loss_panel(ax, by[v], _parent_loss(rec), rec.get("pretrain_tokens"))
        else:
            ax.text(0.5, 0.5, f"{v}: not in the token-scaling record", ha="center", transform=ax.transAxes)
            ax.set_axis_off()
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle("Figure 1 (left): validation loss at equal training tokens, pruned P-R_D vs scratch S_D "
                 "(mean ± s.d. over seeds; Δ = S − P-R)", fontsize=11)
    return fig


def _granularity_bands(ax, idx: dict, methods: list[str], label: bool) -> None:
    """Light background bands behind the methods of each granularity (and its name on top)."""
    gran = [C._granularity(idx, v) for v in methods]
    for g in dict.fromkeys(gran):
        xs = [i for i, gg in enumerate(gran) if gg == g]
        ax.axvspan(min(xs) - 0.45, max(xs) + 0.45, color=GRAN_COLORS.get(g, "0.5"), alpha=0.08, lw=0)
        if label:
            ax.text((min(xs) + max(xs)) / 2, 1.01, g, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=9, color=GRAN_COLORS.get(g, "0.3"), fontweight="bold")


def _method_labels(ax, idx: dict, methods: list[str]) -> None:
    ax.set_xticks(np.arange(len(methods)), [pretty(v, C._granularity(idx, v)).replace(" ", "\n", 1) for v in methods],
                  fontsize=8)
    ax.set_xlim(-0.6, len(methods) - 0.4)


def _arm_values(idx: dict, key: tuple, acc: bool) -> tuple[float | None, float]:
    """(value, s.e.) of an arm: average accuracy (%) with its s.e. (pvs.chance), else loss with its seed s.d."""
    if acc:
        a = K.arm_accuracy(C.arm(idx, key))
        return (None, 0.0) if a is None else (100 * a["mean"], 100 * a["se"])
    mean, sd, _ = arm_stat(idx, key)
    return mean, sd or 0.0


def _strip(strip, x, methods, diffs, errs, read, acc: bool) -> None:
    """S − P bars: coloured by the winner where both arms are above chance, grey and labelled 'at chance'
    where they are not (no winner is implied)."""
    colors = ["0.75" if not ok else SCRATCH["color"] if (d > 0 if acc else d < 0) else PRUNED["color"]
              for d, ok in zip((d or 0 for d in diffs), read)]
    strip.bar(x, [np.nan if d is None else d for d in diffs], 0.5, yerr=errs, capsize=2, error_kw={"lw": 0.8},
              color=colors, alpha=0.85)
    for xi, d, ok in zip(x, diffs, read):
        if d is not None:
            strip.annotate((f"{d:+.1f}" if acc else f"{d:+.3f}") if ok else "at chance", (xi, 1),
                           xycoords=("data", "axes fraction"), xytext=(0, -3), textcoords="offset points",
                           ha="center", va="top", fontsize=7, fontweight="bold" if ok else "normal",
                           color="0.1" if ok else "0.35")
    strip.axhline(0, color="0.3", lw=0.8)
    strip.margins(y=0.3)


def fig1_acc_equal_total(rec: dict) -> Figure:
    """Figure 1 right: pruned P-R_N vs scratch S_{P+N} per method (accuracy, else loss), with an S − P strip;
    accuracy is drawn against its chance level, and a difference between arms at chance is not read."""
    idx = C.index(rec["rows"])
    methods = method_order(idx, rec)
    ratio = {v: next(k[1] for k in idx if k[0] == v) for v in methods}
    acc = any(r.get("downstream_avg") is not None for r in rec["rows"] if r.get("arm") != "parent")
    keys = {(v, arm): (v, ratio[v], arm, budget) for v in methods for arm, budget in (("P-R", "N"), ("S", "P+N"))}
    vals = {k: _arm_values(idx, key, acc) for k, key in keys.items()}
    fig = Figure(figsize=(max(7.0, 0.95 * len(methods) + 2.5), 6.0), layout="constrained")
    top, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    x = np.arange(len(methods))
    z = K.Z if acc else 1.0
    for off, arm, st, label in ((-0.2, "P-R", PRUNED, "pruned P-R_N"), (0.2, "S", SCRATCH, "scratch S_{P+N}")):
        ys = [vals[(v, arm)][0] for v in methods]
        top.bar(x + off, [np.nan if y is None else y for y in ys], 0.38, yerr=[z * vals[(v, arm)][1] for v in methods],
                color=st["color"], alpha=0.85, label=label, capsize=2, error_kw={"lw": 0.8, "ecolor": "0.3"})
        for xi, y in zip(x + off, ys):  # values inside the bars' feet, clear of the error bars
            if y is not None:
                top.annotate(f"{y:.1f}" if acc else f"{y:.2f}", (xi, 0), xycoords=("data", "axes fraction"),
                             xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                             color="white", fontweight="bold", rotation=90 if len(methods) > 12 else 0)
    ends = [y + sg * z * e for (y, e) in vals.values() if y is not None for sg in (-1, 1)]
    chance = K.average_chance([r for r in rec["rows"] if r.get("arm") != "parent"]) if acc else None
    if chance is not None:
        ends.append(100 * chance)
        top.axhline(100 * chance, color="0.2", ls="--", lw=1.1, label=f"chance ({100 * chance:.1f}%)")
    if ends:
        lo, hi = min(ends), max(ends)
        pad = max(0.08 * (hi - lo), 0.3 if acc else 0.01)
        top.set_ylim(lo - pad, hi + 3 * pad)
    _granularity_bands(top, idx, methods, label=True)
    top.set_ylabel("average accuracy (%)" if acc else "validation loss (nats/token)")
    top.legend(loc="upper left", fontsize=8, ncols=3)
    fig.suptitle("Figure 1 (right): equal total tokens, pruned P-R_N vs scratch S_{P+N}\n" +
                 ("average downstream accuracy (error bars 95%) against chance" if acc else
                  "validation loss: downstream not evaluated in these records (± s.d. over seeds)"), fontsize=11)
    diff, derr, read = [], [], []
    for v in methods:
        (s, es), (p, ep) = vals[(v, "S")], vals[(v, "P-R")]
        diff.append(None if s is None or p is None else s - p)
        derr.append(z * math.hypot(es, ep))
        gap = K.accuracy_gap(C.arm(idx, keys[(v, "S")]), C.arm(idx, keys[(v, "P-R")])) if acc else None
        read.append(gap is None or gap["status"] == "compared")
    _strip(strip, x, methods, diff, derr, read, acc)
    _granularity_bands(strip, idx, methods, label=False)
    strip.set_ylabel("S − P" + (" (points)" if acc else " (loss)"))
    strip.set_title("S − P: bar colour = the winner (blue scratch, purple pruned)" +
                    ("; grey = an arm at chance, no winner" if acc else ""), fontsize=8, fontweight="normal")
    _method_labels(strip, idx, methods)
    return fig


def _d_eff_marks(ax, cu: dict | None) -> None:
    """On a loss panel: from each pruned point, a dotted line across to where scratch reaches its loss (D_eff),
    with the bootstrap interval as a horizontal bar; an extrapolated D_eff is an arrow and a word, no bar."""
    for i, e in enumerate((cu or {}).get("per_budget", [])):
        y, x0 = e["target_loss"], e["pruned_tokens"]
        label = "D_eff (scratch tokens to match P-R)" if i == 0 else None
        if e["d_eff"] is not None:
            ax.plot([x0, e["d_eff"]], [y, y], ls=":", lw=1.1, color="#d62728", label=label, zorder=2)
            lo, hi = e.get("ci95") or (None, None)
            if e.get("ci95") and lo is not None and hi is not None:
                ax.errorbar([e["d_eff"]], [y], xerr=[[e["d_eff"] - lo], [hi - e["d_eff"]]], color="#d62728",
                            marker="|", ms=10, capsize=3, lw=1.1, zorder=3)
            else:
                ax.plot([e["d_eff"]], [y], marker="|", ms=10, color="#d62728", zorder=3)
        else:
            beyond = e["status"].startswith(BEYOND)
            ax.annotate("beyond largest\nbudget" if beyond else "scratch\nalready ahead", xy=(x0, y),
                        xytext=(14 if beyond else -14, 0), textcoords="offset points", va="center",
                        ha="left" if beyond else "right", fontsize=7, color="#d62728",
                        arrowprops={"arrowstyle": "<-", "color": "#d62728", "lw": 1})


def _gap_panel(ax, m: dict) -> None:
    """Δ vs tokens with 95% intervals (none where an arm has one seed) and claim 2's endpoint contrast."""
    pts = m["points"]
    x = np.array([q["tokens"] for q in pts])
    d = np.array([q["delta"].value for q in pts])
    ax.errorbar(x, d, yerr=[q["delta"].half or 0 for q in pts], color="0.15", marker="D", ms=5, lw=1, ls="--",
                elinewidth=1, capsize=3, label="Δ (95%)", zorder=3)
    ax.axhline(0, color="0.3", lw=0.9)
    ax.set_title(f"Δ(last) − Δ(first) = {m['endpoint'].short()}\n→ {m['verdict']}", fontsize=8,
                 fontweight="normal")
    _token_axis(ax, x, None)
    lo, hi = min(0.0, float(np.min(d))), max(0.0, float(np.max(d)))
    ax.set_ylim(lo - 0.12 * (hi - lo + 1e-9), hi + 0.12 * (hi - lo + 1e-9))
    ax.set_ylabel("Δ = loss(S) − loss(P-R)")
    ax.legend(loc="best", fontsize=7)


def token_scaling(claim2: dict, rec: dict) -> Figure:
    """All scaling methods: loss vs tokens with D_eff (top) and the gap with its endpoint contrast (bottom)."""
    per = claim2["per_method"]
    n = max(1, len(per))
    fig = Figure(figsize=(max(4.6 * n, 9.0), 8.4), layout="constrained")
    # a thin row between the panels holds the shared legend (inside an axes it would hide the curves)
    gs = fig.add_gridspec(3, n, height_ratios=[1, 0.09, 1])
    for j, m in enumerate(per):
        top = fig.add_subplot(gs[0, j])
        _loss_panel(top, m, _parent_loss(rec), rec.get("pretrain_tokens"), annotate=False)
        _d_eff_marks(top, m.get("catch_up"))
        _gap_panel(fig.add_subplot(gs[2, j], sharex=top), m)
    if per:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        box = fig.add_subplot(gs[1, :])
        box.set_axis_off()
        box.legend(handles, labels, loc="center", ncols=min(5, len(labels)), fontsize=8)
    fig.suptitle("Token scaling at equal training tokens: loss and D_eff, the scratch budget that matches each "
                 "pruned model (top);\nthe gap Δ with claim 2's endpoint contrast (bottom)", fontsize=11)
    return fig


def _method_styles(idx: dict, rec: dict) -> dict:
    seen: dict = {}
    out = {}
    for v in method_order(idx, rec):
        g = C._granularity(idx, v)
        k = seen[g] = seen.get(g, -1) + 1
        out[v] = {"color": GRAN_COLORS.get(g, "0.4"), "marker": METHOD_MARKERS[k % len(METHOD_MARKERS)],
                  "ls": ("-", "--", "-.", ":")[k % 4]}
    return out


def _ci_note(ests) -> str:
    has = [e.half is not None for e in ests]
    if all(has):
        return "95% intervals"
    return "95% intervals; none where an arm has one seed (not tested)" if any(has) else \
        "no intervals: one seed per arm, so not tested"


def ratio_sweep(rec: dict, claim3: dict) -> Figure:
    """Δ vs achieved pruning ratio per method, at equal training tokens (S_N) and equal total tokens (S_{P+N});
    nominal ratios that reach the same shape are one point."""
    idx = C.index(rec["rows"])
    styles = _method_styles(idx, rec)
    # a tier that does not train S_{P+N} along the sweep (study.sweep_equal_total) gets one panel, not an empty one
    panels = [("N", "equal training tokens: S_N − P-R_N")]
    if any(r["arm"] == "S" and r.get("budget") == "P+N" for r in rec["rows"]):
        panels.append(("P+N", "equal total tokens: S_{P+N} − P-R_N"))
    fig = Figure(figsize=(11 if len(panels) > 1 else 8, 4.8), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, len(panels), sharey=True)))
    ests = []
    for ax, (budget, title) in zip(axes, panels):
        for j, (v, st) in enumerate(styles.items()):
            pts = [(g["achieved"], C.gap(idx, (v, g["ratio"], "S", budget), (v, g["ratio"], "P-R", "N")))
                   for g in C.distinct_ratios(idx, v)[0]
                   if idx.get((v, g["ratio"], "S", budget)) and idx.get((v, g["ratio"], "P-R", "N"))]
            ests += [e for _, e in pts]
            if pts:  # a small sideways dodge keeps methods with equal values visible
                dodge = 0.006 * (j - (len(styles) - 1) / 2)
                ax.errorbar([a + dodge for a, _ in pts], [e.value for _, e in pts], yerr=[e.half or 0 for _, e in pts],
                            label=f"{pretty(v, C._granularity(idx, v))} ({C._granularity(idx, v)})", capsize=3, lw=1.6, ms=6, **st)
        ax.axhline(0, color="0.3", lw=0.9)
        ax.set_title(title)
        ax.set_xlabel("achieved pruning ratio (fraction of non-embedding params removed)")
    axes[0].set_ylabel("Δ = loss(S) − loss(P-R)   (> 0: pruned ahead)")
    axes[0].legend(fontsize=8)
    if claim3.get("notes"):
        fig.text(0.995, 0.035, "merged: " + "; ".join(claim3["notes"]), fontsize=6, color="0.3", ha="right")
    fig.suptitle(f"Pruning-ratio sweep: the pruning advantage vs achieved ratio ({_ci_note(ests)})", fontsize=11)
    return fig


def granularity(claim1: dict, claim4: dict, rec: dict) -> Figure:
    """Δ at equal training tokens (top) and at equal total tokens (bottom) per method, grouped by granularity."""
    idx = C.index(rec["rows"])
    methods = method_order(idx, rec)
    gran = [C._granularity(idx, v) for v in methods]
    fig = Figure(figsize=(max(7.0, 0.85 * len(methods) + 2.5), 7.0), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(methods))
    panels = ((axes[0], {m["method"]: m["delta"] for m in claim1["per_method"]},
               "equal training tokens: Δ_N = loss(S_N) − loss(P-R_N)"),
              (axes[1], {m["method"]: m["delta_total"] for m in claim4["per_method"]},
               "equal total tokens: Δ_total = loss(S_{P+N}) − loss(P-R_N)"))
    for i, (ax, est, title) in enumerate(panels):
        ys = [est[v].value if v in est else np.nan for v in methods]
        es = [est[v].half if v in est and est[v].half is not None else np.nan for v in methods]
        ax.bar(x, ys, 0.62, yerr=es, color=[GRAN_COLORS.get(g, "0.5") for g in gran], capsize=3, alpha=0.9)
        for xi, y, e in zip(x, ys, es):
            if np.isfinite(y):  # † = no interval: an arm has one seed
                e = 0 if np.isnan(e) else e
                ax.annotate(f"{y:+.3f}" + ("" if e else "†"), (xi, y + (e if y >= 0 else -e)),
                            xytext=(0, 3 if y >= 0 else -3),
                            textcoords="offset points",
                            ha="center", va="bottom" if y >= 0 else "top", fontsize=7)
        ax.axhline(0, color="0.3", lw=0.9)
        ax.margins(y=0.15)
        _granularity_bands(ax, idx, methods, label=i == 0)
        ax.set_title(title, fontsize=10, pad=16 if i == 0 else 6)
        ax.set_ylabel("Δ  (> 0: pruned ahead)")
    _method_labels(axes[1], idx, methods)
    ests = [m["delta"] for m in claim1["per_method"]] + [m["delta_total"] for m in claim4["per_method"]]
    if claim4.get("gate", {}).get("reason"):
        axes[1].text(0.01, 0.02, f"claim 4: {claim4['gate']['reason']}", transform=axes[1].transAxes, fontsize=7,
                     color="0.3", va="bottom")
    note = _ci_note(ests) if all(e.half is None for e in ests) or all(e.half is not None for e in ests) else \
        "95% intervals; † none: an arm has one seed, so not tested"
    fig.suptitle(f"Granularity: the pruning advantage per method, depth / width / sparse\n({note})", fontsize=11)
    return fig


def released_parent(rec: dict) -> Figure:
    """Validation loss per (method, budget) and arm, one bar per parent the arm started from."""
    rows = [r for r in rec["rows"] if r.get("arm") in ("P-R", "S", "parent")]
    groups = sorted({(r.get("variant") or "parent", str(r.get("budget") or "")) for r in rows})
    labels = sorted({f"{r['arm']} · {r.get('parent') or 'released'}" for r in rows})
    fig = Figure(figsize=(max(6, 1.4 * len(groups) + 2), 4.4), layout="constrained")
    ax = fig.subplots()
    w = 0.8 / max(1, len(labels))
    for j, lab in enumerate(labels):
        ys = [np.mean([r["val_loss"] for r in rows if (r.get("variant") or "parent", str(r.get("budget") or "")) == g
                       and f"{r['arm']} · {r.get('parent') or 'released'}" == lab] or [np.nan]) for g in groups]
        st = PRUNED if lab.startswith("P-R") else SCRATCH if lab.startswith("S") else {"color": "0.5"}
        ax.bar(np.arange(len(groups)) + (j - (len(labels) - 1) / 2) * w, ys, w, color=st["color"],
               alpha=0.5 + 0.5 * (j % 2), label=lab)
    gran = {r.get("variant") or "parent": r.get("granularity") or "" for r in rows}
    ax.set_xticks(np.arange(len(groups)), [f"{pretty(v, gran[v])}\n{b}" for v, b in groups], fontsize=8)
    ax.set_ylabel("validation loss (nats/token)")
    ax.legend(fontsize=8)
    ax.set_title("Released vs custom parent")
    finite = [r["val_loss"] for r in rows if math.isfinite(r["val_loss"])]
    if finite:
        ax.set_ylim(min(finite) - 0.1 * (np.ptp(finite) + 0.1), max(finite) + 0.1 * (np.ptp(finite) + 0.1))
    return fig
