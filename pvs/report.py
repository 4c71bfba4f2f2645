"""Every table and figure of the paper, and the claim checks, rendered from cached metrics records only.

    out = render_all("cpu")                  # reads figures/cpu/metrics/*.json, writes figures/cpu/
    out = render_all("cpu", metrics_root="/tmp/m", out_dir="/tmp/fig")
    show(out)                                # in a notebook: claims, figures and tables inline

Nothing here runs a model or opens a run directory: the records written by pvs.study.run_experiment
hold every number. A missing or corrupt record is a one-line PvsError naming the file and the
`pvs study` command that rewrites it; a skipped experiment (released_parent at small tiers) becomes
a short note. Each output names the tier, config hash, code commit and data hashes of its records
(a footer line, and provenance.json for all outputs).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from pvs import claims as C
from pvs import report_tables as T
from pvs.report_claims import claims_markdown
from pvs.errors import PvsError, check
from pvs.experiments import CLAIM_EXPERIMENTS, EXPERIMENTS
from pvs.paths import figures_root
from pvs.records import atomic_write_json, atomic_write_text

ARM_NAMES = ("parent", "P-R", "S")


def _problem(rec, tier: str) -> str | None:
    """Why a parsed record cannot be rendered (None: it can)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("rows"), list):
        return "no 'rows' list"
    if rec.get("tier") not in (None, tier):
        return f"it holds tier {rec['tier']!r}, not {tier!r}"
    for i, r in enumerate(rec["rows"]):
        if not isinstance(r, dict) or r.get("arm") not in ARM_NAMES:
            return f"row {i} has no arm in {ARM_NAMES}"
        loss = r.get("val_loss")
        if not isinstance(loss, (int, float)) or isinstance(loss, bool) or not math.isfinite(loss):
            return f"row {i} has val_loss {loss!r}, not a finite number"
        need = ("variant", "budget", "ratio", "train_tokens") if r["arm"] != "parent" else ("train_tokens",)
        missing = [k for k in need if r.get(k) is None]
        if missing:
            return f"row {i} lacks {', '.join(missing)}"
    return None


def load_record(tier: str, name: str, root: Path) -> dict:
    """One metrics record, checked; a one-line PvsError names the file and the command that rewrites it."""
    path = Path(root) / f"{name}.json"
    redo = f"regenerate it with `pvs study --tier {tier} --experiment {name}`"
    if not path.is_file():
        raise PvsError(f"metrics record {str(path)!r} is missing; {redo}")
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PvsError(f"metrics record {str(path)!r} is corrupt (not JSON: {getattr(e, 'msg', e)}); {redo}") from None
    problem = _problem(rec, tier)
    if problem:
        raise PvsError(f"metrics record {str(path)!r} is corrupt ({problem}); {redo}")
    rec["_path"] = str(path)
    return rec


def provenance(rec: dict, out: Path | None = None) -> dict:
    """Where a record's numbers came from. The record's path is relative to the output folder (or just its
    name), never absolute, so re-rendering in another checkout writes the same bytes."""
    code = rec.get("code") or {}
    path = Path(rec["_path"])
    try:
        where = os.path.relpath(path, out) if out is not None else path.name
    except ValueError:  # another drive (Windows)
        where = path.name
    if where.startswith(".."):
        where = path.name
    return {"record": where, "tier": rec.get("tier"), "config_hash": rec.get("config_hash"),
            "code_commit": code.get("commit"), "code_dirty": code.get("dirty"),
            "run_commits": sorted({str(r.get("code")) for r in rec["rows"] if r.get("code")}),
            "data_sha256": sorted({r["data_sha256"] for r in rec["rows"] if r.get("data_sha256")})}


def footer(recs: list[dict]) -> str:
    """One line naming where the numbers came from."""
    ps = [provenance(r) for r in recs]
    uniq = (lambda key: ", ".join(dict.fromkeys(str(x) for p in ps for x in (p[key] if isinstance(p[key], list)
                                                                              else [p[key]]))))
    commits = ", ".join(dict.fromkeys(f"{str(p['code_commit'])[:10]}{' (dirty)' if p['code_dirty'] else ''}"
                                      for p in ps))
    return (f"tier {uniq('tier')} · config {uniq('config_hash')} · code {commits} · data {uniq('data_sha256')} · "
            f"records: {', '.join(Path(p['record']).name for p in ps)}")


def render_all(tier: str, metrics_root=None, out_dir=None, only=None) -> dict:
    """Read figures/<tier>/metrics/*.json (or metrics_root) and write every figure, table and the claims
    under figures/<tier>/ (or out_dir; default with metrics_root: its parent). Returns the written paths.
    ``only``: names of the figures/tables to write (default all; the claims are always written)."""
    from pvs import report_figures as F
    root = Path(metrics_root) if metrics_root else figures_root() / tier / "metrics"
    out = Path(out_dir) if out_dir else (root.parent if metrics_root else figures_root() / tier)
    present = [name for name in EXPERIMENTS if (root / f"{name}.json").is_file()]
    check(bool(present), f"no metrics records in {str(root)!r}; run `pvs study --tier {tier}` first")
    # an experiment not run yet is a note in place of its tables and figures, not an error: running one
    # experiment alone must still render what it produced
    recs = {name: load_record(tier, name, root) if name in present else
            {"rows": [], "skipped": f"not run yet (`pvs study --tier {tier} --experiment {name}`)",
             "_path": str(root / f"{name}.json")} for name in EXPERIMENTS}
    out.mkdir(parents=True, exist_ok=True)
    notes = {n: (f"{n}: skipped — {r['skipped']}" if r.get("skipped") else f"{n}: the record has no rows")
             for n, r in recs.items() if r.get("skipped") or not r["rows"]}
    live = {n: r for n, r in recs.items() if n not in notes}
    result = C.check_claims(live)
    cl = {c["id"]: c for c in result["claims"]}
    written: dict = {"out_dir": out, "figures": {}, "tables": {}, "notes": notes, "sources": {}}

    def table(t: T.Table, sources: list[str]) -> None:
        if only is not None and t.name not in only:
            return
        missing = [s for s in sources if s not in live]
        if missing:  # a skipped experiment: a note in place of the table
            t = T.Table(t.name, t.title, [], [], [notes[s] for s in missing])
        used = [recs[s] for s in sources]
        atomic_write_text(out / f"{t.name}.md", t.markdown(footer(used)))
        paths = [out / f"{t.name}.md"]
        if not missing:
            atomic_write_text(out / f"{t.name}.csv", t.csv())
            paths.append(out / f"{t.name}.csv")
        written["tables"][t.name] = paths
        written["sources"][t.name] = [provenance(r, out) for r in used]

    def figure(name: str, sources: list[str], make) -> None:
        if all(s in live for s in sources) and (only is None or name in only):
            with F.style():
                written["figures"][name] = F.save(make(), out, name, footer([recs[s] for s in sources]))
            written["sources"][name] = [provenance(recs[s], out) for s in sources]

    eq, ts, rs, rp = (live.get(n) or {"rows": []} for n in EXPERIMENTS)
    figure("fig1_loss_vs_tokens", ["token_scaling"], lambda: F.fig1_loss_vs_tokens(cl[2], ts))
    figure("fig1_acc_equal_total", ["equal_tokens"], lambda: F.fig1_acc_equal_total(eq))
    figure("token_scaling", ["token_scaling"], lambda: F.token_scaling(cl[2], ts))
    figure("ratio_sweep", ["ratio_sweep"], lambda: F.ratio_sweep(rs, cl[3]))
    figure("granularity", ["equal_tokens"], lambda: F.granularity(cl[1], cl[4], eq))
    figure("released_parent", ["released_parent"], lambda: F.released_parent(rp))
    table(T.equal_tokens_table(eq), ["equal_tokens"])
    table(T.equal_tokens_ppl_table(eq), ["equal_tokens"])
    table(T.equal_tokens_downstream_table(eq), ["equal_tokens"])
    table(T.token_scaling_table(ts, cl[2]), ["token_scaling"])
    table(T.ratio_sweep_table(rs), ["ratio_sweep"])
    table(T.released_parent_table(rp), ["released_parent"])
    for t in T.paper_vs_ours(ts, cl[2], eq):
        table(t, ["token_scaling", "equal_tokens"])

    claim_sources = [recs[n] for n in CLAIM_EXPERIMENTS]
    result["provenance"] = [provenance(r, out) for r in claim_sources]
    atomic_write_text(out / "claims.md", claims_markdown(result, footer(claim_sources)))
    atomic_write_json(out / "claims.json", C.jsonable(result))
    written["claims"] = [out / "claims.md", out / "claims.json"]
    written["verdicts"] = {c["id"]: c["verdict"] for c in result["claims"]}
    written["sources"]["claims"] = result["provenance"]
    atomic_write_json(out / "provenance.json", written["sources"])
    atomic_write_text(out / "report.md", _index(tier, written))
    written["report"] = out / "report.md"
    return written


def _index(tier: str, w: dict) -> str:
    """report.md: every figure and table of the tier on one page, with the claims."""
    out = w["out_dir"]
    lines = [f"# pvs results, tier {tier}", "", "Rendered by `pvs.report.render_all` from the metrics records only; "
             "each item's sources are in provenance.json.", ""]
    lines += [f"> {n}" for n in w["notes"].values()] + [""]
    lines += ["## Claims", "", (out / "claims.md").read_text().split("\n", 2)[2], "## Figures", ""]
    lines += [f"![{name}]({name}.png)\n" for name in w["figures"]]
    lines += ["## Tables", ""] + [(out / f"{name}.md").read_text() for name in w["tables"]]
    return "\n".join(lines)


CAPTIONS = {
    "fig1_loss_vs_tokens": "Figure 1 (left): validation loss of the pruned model retrained for D tokens (P-R_D) and of "
                           "the same shape from scratch (S_D), at each budget. The shaded gap is what the pruned start "
                           "is worth; claim 1 asks that it be positive, claim 2 that it shrink as D grows.",
    "fig1_acc_equal_total": "Figure 1 (right): at equal total tokens the scratch model also gets the parent's P "
                            "tokens (S_{P+N}). Claim 4 asks whether fine-grained (sparse) pruning keeps an edge here "
                            "while coarse (depth, width) pruning is matched or beaten.",
    "token_scaling": "Token scaling: the losses with D_eff, the scratch budget that matches each pruned model (top), "
                     "and the gap with claim 2's endpoint contrast (bottom).",
    "ratio_sweep": "Ratio sweep: the equal-token gap against the achieved pruning ratio; claim 3 asks that it "
                   "shrink as more is pruned.",
    "granularity": "Granularity: each method's gap at equal training tokens (top, claim 1) and at equal total "
                   "tokens (bottom, claim 4), grouped depth / width / sparse.",
    "released_parent": "Released parent: pruning the released SmolLM2-135M against pruning our own parent.",
}
"""What each figure shows, printed under it in the report notebook."""


def show(written: dict) -> None:
    """Display the claims, figures and tables of render_all's result in a notebook."""
    from IPython.display import Image, Markdown, display
    for note in written["notes"].values():
        display(Markdown(f"> {note}"))
    display(Markdown(Path(written["claims"][0]).read_text()))
    for name, (png, _pdf) in written["figures"].items():
        display(Markdown(f"### {name}\n\n{CAPTIONS.get(name, '')}"), Image(filename=str(png)))
    for name, paths in written["tables"].items():
        display(Markdown(Path(paths[0]).read_text()))


def files(written: dict) -> list[str]:
    """Every file render_all wrote, relative to its output folder."""
    out = Path(written["out_dir"])
    paths = [p for ps in (*written["figures"].values(), *written["tables"].values(), written["claims"]) for p in ps]
    return sorted(str(Path(p).relative_to(out)) for p in [*paths, out / "provenance.json", written["report"]])
