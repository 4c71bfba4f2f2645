"""Rendering of the paper's tables and figures from metrics records, and the claim checks (pvs.report,
pvs.claims), on synthetic records shaped like a real smoke-tier record (pvs.study.run_experiment)."""
from __future__ import annotations

import copy
import csv as csv_module
import json
import math
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_estimate
from pvs import claims as C
from pvs import report
from pvs.errors import PvsError

P, N = 1_200_000, 300_000
FRACS = (0.05, 0.15, 0.25, 1.25, 2.5)
GRAN = {"minitron-depth": "depth", "shortgpt": "depth", "minitron-width": "width", "flap": "width",
        "sheared-llama": "width", "sparsegpt": "sparse", "sparsegpt-2:4": "sparse", "wanda": "sparse",
        "wanda-2:4": "sparse", "magnitude": "sparse"}
TASKS = ("winogrande", "arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq", "boolq", "openbookqa")
# a P-R row of a real smoke-tier equal_tokens record, the template every synthetic row is edited from
TEMPLATE = {"achieved_ratio": 0.4998306806637318, "arm": "P-R", "budget": "N",
            "code": "13a7d580264dfb7e891fa8952e2298e82a16d504", "data_sha256": "4a718735d8df5a03",
            "granularity": "depth", "params": {"non_embedding": 94528, "nonzero": 160064, "total": 160064},
            "ppl": {"bbc": 168.8, "brown": 153.5, "milton": 143.4, "moby": 151.4, "shakespeare": 149.1,
                    "sotu": 150.2, "wiki": 152.7},
            "ratio": 0.5, "run": "smoke/arms/minitron-depth-r0.5-R10240-s0-2765622e", "seed": 0,
            "total_tokens": 51200, "train_tokens": 10240, "val_loss": 5.128689765930176, "variant": "minitron-depth"}


ARCH = {"minitron-depth": "depth", "shortgpt": "depth", "minitron-width": "width", "sheared-llama": "width"}
BLOCKS = 8


def _blocks(loss: float, key: str) -> dict:
    """val_blocks of a row: the text's block difficulty (shared by every row) plus a row's own spread, with
    sum(loss_sum) / sum(tokens) == loss."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    own = rng.normal(0, 0.02, BLOCKS)
    per = loss + np.linspace(-0.3, 0.3, BLOCKS) + own - own.mean()
    return {"tokens": [256] * BLOCKS, "loss_sum": [256 * float(x) for x in per]}


def _row(arm, variant, budget, ratio, seed, tokens, loss, downstream=False, blocks=True, acc_shift=0.0, run=None):
    r = copy.deepcopy(TEMPLATE)
    r.update(arm=arm, variant=variant, budget=budget, ratio=ratio, seed=seed, train_tokens=tokens, val_loss=loss,
             granularity=GRAN.get(variant), total_tokens=tokens + (P if arm == "P-R" else 0),
             achieved_ratio=ratio - 0.0003, run=run or f"cpu/arms/{variant}-{arm}-{budget}-{ratio}-s{seed}",
             data_sha256="4a718735d8df5a03" if arm == "P-R" else "40a47d1947625b51")
    r["ppl"] = {k: math.exp(loss) * (1 + 0.05 * i) for i, k in enumerate(r["ppl"])}
    if blocks:
        r["val_blocks"] = _blocks(loss, r["run"])
    if arm == "parent":
        r.update(budget=None, variant=None, granularity=None, ratio=0.0)
    if downstream:
        vals = {t: float(np.clip(0.95 - 0.12 * loss + 0.03 * i + acc_shift, 0.05, 0.95)) for i, t in enumerate(TASKS)}
        r["downstream"] = {t: {"value": v, "stderr": 0.045, "n": 100, "n_total": 1000 + 100 * i, "metric": "acc"}
                           for i, (t, v) in enumerate(vals.items())}
        r["downstream_avg"], r["downstream_avg_stderr"] = float(np.mean(list(vals.values()))), 0.016
    return r


def _record(name, rows, tier="cpu", seeds=(0, 1, 2)):
    return {"experiment": name, "tier": tier, "config_hash": "abc123def456", "pretrain_tokens": P, "retrain_tokens": N,
            "code": {"commit": "13a7d580264dfb7e891fa8952e2298e82a16d504", "dirty": False, "pvs": "0.1.0"},
            "config": {"study": {"headline_method": "minitron-depth", "headline_seeds": list(seeds),
                                 "seeds": list(seeds), "methods": list(GRAN), "ratio": 0.5}},
            "rows": rows}


def _equal_tokens(parent, methods, seeds, sign, eps, downstream, blocks, acc_shift):
    """Equal-tokens rows: scratch arms of one shape are shared by its methods (the same runs and losses)."""
    eq, shared = list(parent), {}
    for v in methods:
        g = GRAN[v]
        for s in seeds:
            key = (ARCH.get(v, v), s)
            if key not in shared:
                shared[key] = 4.30 + 0.02 * len(ARCH.get(v, v)) % 0.1 + eps()
            sn = shared[key]
            run = f"cpu/arms/scratch-{ARCH.get(v, v)}-N-s{s}"
            eq += [_row("S", v, "N", 0.5, s, N, sn, downstream, blocks, acc_shift, run=run),
                   _row("P-R", v, "N", 0.5, s, N, sn - sign * (0.30 if g == "sparse" else 0.22) + eps(), downstream,
                        blocks, acc_shift)]
            edge = sign * (0.12 if g == "sparse" else -0.10)  # Δ_total = S_{P+N} - P-R_N
            eq.append(_row("S", v, "P+N", 0.5, s, P + N, eq[-1]["val_loss"] + edge + eps(), downstream, blocks,
                           acc_shift))
    return eq


def make_records(root: Path, reverse: bool = False, crossing: bool = False, seeds=(0, 1, 2), downstream=True,
                 released: bool = False, tier: str = "cpu", noise: float = 0.004, methods=tuple(GRAN),
                 blocks: bool = True, bigram: float | None = 4.5, acc_shift: float = 0.0) -> Path:
    """Four metrics records. Default: pruning wins at equal training tokens by a gap that shrinks with tokens
    and ratio, and at equal total tokens sparse keeps its edge while depth/width lose it; every arm has
    ``seeds``; rows carry val_blocks (blocks) and the parent a bigram baseline it beats (bigram; None: old
    records without one). reverse: all of that turned around. crossing: token-scaling arms are power laws whose
    curves cross at 36 x the smallest budget. Depth ratios 0.7 and 0.8 reach the same shape (achieved 0.75)."""
    rng = np.random.default_rng(0)
    eps = (lambda: float(rng.normal(0, noise)))
    sign = -1 if reverse else 1
    parent = [_row("parent", None, None, 0.0, 0, P, 3.55, blocks=blocks)]
    if bigram is not None:
        parent[0]["baselines"] = {"unigram": 6.0, "bigram": bigram}
    eq = _equal_tokens(parent, methods, seeds, sign, eps, downstream, blocks, acc_shift)
    ts = list(parent)
    for v in ("minitron-depth", "minitron-width", "flap"):
        for f in FRACS:
            D, z = round(f * P), f / FRACS[0]
            for s in seeds:
                if crossing:
                    ls, lp = 3.5 + 2.0 * z ** -0.5, 3.7 + 0.8 * z ** -0.5
                else:
                    ls = 3.6 + 1.6 * z ** -0.35 + eps()
                    gap = 0.45 * z ** -0.6 if not reverse else 0.02 * z ** 0.6
                    lp = ls - gap + eps()
                ts += [_row("S", v, f"{f:g}P", 0.5, s, D, ls, blocks=blocks),
                       _row("P-R", v, f"{f:g}P", 0.5, s, D, lp, blocks=blocks)]
    rs = list(parent)
    for v in ("minitron-depth", "minitron-width", "sparsegpt"):
        for r in (0.5, 0.6, 0.7, 0.8):
            gap = 0.30 - 0.9 * (r - 0.5) if not reverse else 0.03 + 0.9 * (r - 0.5)
            total = (0.1 if GRAN[v] == "sparse" else -0.1) * sign
            for s in seeds:
                sn = 4.2 + r + eps()
                lp = sn - gap + eps()
                arms = [_row("P-R", v, "N", r, s, N, lp, blocks=blocks), _row("S", v, "N", r, s, N, sn, blocks=blocks),
                        _row("S", v, "P+N", r, s, P + N, lp + total + eps(), blocks=blocks)]
                if v == "minitron-depth" and r in (0.7, 0.8):  # an 8-layer parent keeps 2 layers at both ratios
                    for a in arms:
                        a["achieved_ratio"] = 0.75
                rs += arms
    rp = _record("released_parent", [], tier)
    if released:
        rp["rows"] = [dict(_row(a, "minitron-depth", "N", 0.5, 0, N, loss), parent=p)
                      for a, p, loss in (("P-R", "smollm2-135m", 3.9), ("P-R", "custom", 3.95), ("S", "custom", 4.2))]
    else:
        rp["skipped"] = f"tier {tier} sets no study.released_parent: retraining SmolLM2-135M is GPU work here"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("equal_tokens", eq), ("token_scaling", ts), ("ratio_sweep", rs)):
        (root / f"{name}.json").write_text(json.dumps(_record(name, rows, tier, seeds), indent=1))
    (root / "released_parent.json").write_text(json.dumps(rp))
    return root


def rows_of(path: Path, variant: str, arm: str, budget: str) -> list[dict]:
    """The rows of one arm of a written metrics record."""
    return [r for r in json.loads(Path(path).read_text())["rows"]
            if r["variant"] == variant and r["arm"] == arm and r["budget"] == budget]


EXPECTED = {"fig1_loss_vs_tokens", "fig1_acc_equal_total", "token_scaling", "ratio_sweep", "granularity"}
TABLES = {"equal_tokens", "equal_tokens_ppl", "equal_tokens_downstream", "token_scaling", "ratio_sweep",
          "paper_vs_ours", "paper_vs_ours_acc"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = make_records(tmp_path_factory.mktemp("fig") / "metrics")
    return report.render_all("cpu", metrics_root=root)


def test_render_all_writes_every_output(rendered):
    out = Path(rendered["out_dir"])
    assert (out / "metrics" / "equal_tokens.json").is_file()  # written beside the metrics folder it read
    for name in EXPECTED:
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 5000, name
    assert (out / "fig1_loss_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    for name in TABLES:
        assert (out / f"{name}.md").read_text().startswith("### ")
        assert (out / f"{name}.csv").read_text().count("\n") >= 2
    # the skipped experiment is a note, not a figure
    assert "released_parent" not in rendered["figures"]
    assert "skipped" in (out / "released_parent.md").read_text()
    assert not (out / "released_parent.csv").exists()
    for f in ("claims.md", "claims.json", "provenance.json", "report.md"):
        assert (out / f).is_file()
    assert set(report.files(rendered)) >= {f"{n}.png" for n in EXPECTED} | {f"{n}.csv" for n in TABLES}


def test_outputs_carry_provenance(rendered):
    out = Path(rendered["out_dir"])
    text = (out / "equal_tokens.md").read_text()
    for part in ("tier cpu", "config abc123def456", "code 13a7d580", "4a718735d8df5a03", "equal_tokens.json"):
        assert part in text
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["fig1_loss_vs_tokens"][0]["config_hash"] == "abc123def456"
    assert "40a47d1947625b51" in prov["granularity"][0]["data_sha256"]


def test_tables_hold_the_record_numbers(rendered):
    out = Path(rendered["out_dir"])
    csv = (out / "equal_tokens.csv").read_text().splitlines()
    head = csv[0].split(",")
    depth = dict(zip(head, next(r for r in csv if r.startswith("minitron-depth,")).split(",")))
    assert depth["granularity"] == "depth" and depth["seeds"] == "3/3/3"
    assert 0.18 < float(depth["delta_n"]) < 0.26  # the placed Δ_N of 0.22
    assert "subsampled 800/" in (out / "equal_tokens_downstream.md").read_text()
    # our Δ at the paper's 10B and 50B (as fractions of P) and their ratio, from the token-scaling rows
    ts = out / "metrics" / "token_scaling.json"
    delta = {f: float(np.mean([r["val_loss"] for r in rows_of(ts, "minitron-depth", "S", f)])
                      - np.mean([r["val_loss"] for r in rows_of(ts, "minitron-depth", "P-R", f)]))
             for f in ("0.05P", "0.25P")}
    lines = list(csv_module.DictReader((out / "paper_vs_ours.csv").read_text().splitlines()))
    at = {ln["paper_tokens"]: ln for ln in lines if ln["method"] == "minitron-depth"}
    assert at["10B"]["our_budget"] == "0.05P" and at["50B"]["our_budget"] == "0.25P"
    assert float(at["10B"]["our_delta"]) == pytest.approx(delta["0.05P"], rel=1e-5)
    assert float(at["50B"]["our_delta"]) == pytest.approx(delta["0.25P"], rel=1e-5)
    assert float(at["50B"]["our_rel"]) == pytest.approx(delta["0.25P"] / delta["0.05P"], rel=1e-5)
    assert float(at["10B"]["our_rel"]) == pytest.approx(1.0)


def test_outputs_change_with_a_record(tmp_path):
    root = make_records(tmp_path / "metrics")
    only = ("ratio_sweep",)  # the figure and the table of that name (the lightest pair)
    first = report.render_all("cpu", metrics_root=root, only=only)
    assert set(first["figures"]) == set(first["tables"]) == {"ratio_sweep"}
    out = first["out_dir"]
    files = {p: p.read_bytes() for p in (out / "ratio_sweep.csv", out / "ratio_sweep.png", out / "claims.json")}
    report.render_all("cpu", metrics_root=root, only=only)  # deterministic for equal input
    assert all(p.read_bytes() == b for p, b in files.items())
    rec = json.loads((root / "ratio_sweep.json").read_text())
    row = next(r for r in rec["rows"] if r["arm"] == "S" and r["budget"] == "N" and r["ratio"] == 0.6)
    row["val_loss"] += 0.2
    (root / "ratio_sweep.json").write_text(json.dumps(rec))
    report.render_all("cpu", metrics_root=root, only=only)
    assert all(p.read_bytes() != b for p, b in files.items())


def test_missing_and_corrupt_records_name_the_file_and_the_command(tmp_path):
    root = make_records(tmp_path / "metrics")
    (root / "ratio_sweep.json").unlink()  # an experiment not run yet: a note naming the command, the rest renders
    written = report.render_all("cpu", metrics_root=root)
    assert "pvs study --tier cpu --experiment ratio_sweep" in written["notes"]["ratio_sweep"]
    assert "ratio_sweep" not in written["figures"] and "token_scaling" in written["figures"]
    assert "pvs study --tier cpu --experiment ratio_sweep" in (root.parent / "ratio_sweep.md").read_text()
    for other in ("equal_tokens", "token_scaling", "released_parent"):
        (root / f"{other}.json").unlink()
    with pytest.raises(PvsError, match=r"no metrics records in .*pvs study --tier cpu"):
        report.render_all("cpu", metrics_root=root)
    root = make_records(tmp_path / "metrics")
    (root / "ratio_sweep.json").write_text('{"rows": [')
    corrupt = r"ratio_sweep\.json.*corrupt.*pvs study --tier cpu --experiment ratio_sweep"
    with pytest.raises(PvsError, match=corrupt) as e:
        report.render_all("cpu", metrics_root=root)
    assert "\n" not in str(e.value)
    (root / "ratio_sweep.json").write_text(json.dumps({"tier": "cpu", "rows": [{"arm": "S", "val_loss": "x"}]}))
    with pytest.raises(PvsError, match=r"corrupt \(row 0 has val_loss 'x'"):
        report.render_all("cpu", metrics_root=root)
    with pytest.raises(PvsError, match="holds tier 'cpu', not 'gpu'"):
        report.render_all("gpu", metrics_root=root)


def test_claims_supported_when_pruning_wins_and_the_gap_shrinks(rendered):
    assert rendered["verdicts"] == {1: C.SUPPORTED, 2: C.SUPPORTED, 3: C.SUPPORTED, 4: C.SUPPORTED}
    res = json.loads((Path(rendered["out_dir"]) / "claims.json").read_text())
    c1 = res["claims"][0]
    eq, ts = (Path(rendered["out_dir"]) / "metrics" / f"{n}.json" for n in ("equal_tokens", "token_scaling"))
    for m in c1["per_method"]:  # every method's interval holds its placed Δ_N and lies above 0
        placed = 0.30 if GRAN[m["method"]] == "sparse" else 0.22
        lo, hi = m["delta"]["ci95"]
        assert 0 < lo < placed < hi, (m["method"], lo, hi)
        assert_estimate(m["delta"], [(1.0, rows_of(eq, m["method"], "S", "N")),
                                     (-1.0, rows_of(eq, m["method"], "P-R", "N"))])
        assert m["delta"]["mde80"] > 0 and "seeds 3+3" in m["delta"]["basis"]
        assert f"evaluation-text variance over {BLOCKS} blocks" in m["delta"]["basis"]
    # the shared scratch arms: 10 methods rest on 8 distinct S_N arms
    assert "8 distinct S_N arm(s) (24 runs)" in c1["scope"]
    c2 = res["claims"][1]["per_method"][0]
    lo, hi = c2["endpoint"]["ci95"]
    planted = 0.45 * (FRACS[-1] / FRACS[0]) ** -0.6 - 0.45
    assert lo < planted < hi < 0
    first, last = f"{FRACS[0]:g}P", f"{FRACS[-1]:g}P"
    assert_estimate(c2["endpoint"], [(1.0, rows_of(ts, c2["method"], "S", last)),
                                     (-1.0, rows_of(ts, c2["method"], "P-R", last)),
                                     (-1.0, rows_of(ts, c2["method"], "S", first)),
                                     (1.0, rows_of(ts, c2["method"], "P-R", first))])
    c3 = res["claims"][2]
    assert any("ratios 0.7, 0.8 reach the same shape" in n for n in c3["notes"])
    assert [q["achieved"] for q in c3["per_method"][0]["points"]] == [0.4997, 0.5997, 0.75]
    assert res["claims"][3]["gate"]["reason"] is None
    sparse = [v for v in GRAN if GRAN[v] == "sparse"]  # claim 4 pools Δ_total over a granularity's methods
    assert_estimate(res["claims"][3]["groups"]["sparse"],
                    [t for v in sparse for t in ((1 / len(sparse), rows_of(eq, v, "S", "P+N")),
                                                 (-1 / len(sparse), rows_of(eq, v, "P-R", "N")))])
    md = (Path(rendered["out_dir"]) / "claims.md").read_text()
    assert "**supported**" in md and "D_eff" in md and "bootstrap" in md


def _claims(root: Path) -> dict:
    return C.check_claims({n: report.load_record("cpu", n, root) for n in ("equal_tokens", "token_scaling",
                                                                           "ratio_sweep")})


def test_claims_contradicted_when_reversed(tmp_path):
    root = make_records(tmp_path / "metrics", reverse=True)
    res = _claims(root)
    assert [c["verdict"] for c in res["claims"]] == [C.CONTRADICTED] * 4
    eq, rs = root / "equal_tokens.json", root / "ratio_sweep.json"
    for m in res["claims"][0]["per_method"]:  # the reversed Δ_N, placed at −0.22 / −0.30, by hand
        assert m["delta"].value < 0
        assert_estimate(m["delta"], [(1.0, rows_of(eq, m["method"], "S", "N")),
                                     (-1.0, rows_of(eq, m["method"], "P-R", "N"))])
    c3 = res["claims"][2]["per_method"][0]  # ratio sweep of minitron-depth: ratios 0.5 and 0.7 (0.8 merged)
    at = lambda arm, r: [x for x in rows_of(rs, c3["method"], arm, "N") if x["ratio"] == r]  # noqa: E731
    assert [q["ratio"] for q in c3["points"]] == [0.5, 0.6, 0.7]
    assert_estimate(c3["endpoint"], [(1.0, at("S", 0.7)), (-1.0, at("P-R", 0.7)),
                                     (-1.0, at("S", 0.5)), (1.0, at("P-R", 0.5))])


def test_old_records_one_seed_no_blocks_no_baseline(tmp_path):
    """Records written before val_blocks and baselines, with one seed per arm: every claim says why it is
    not tested, and nothing borrows noise from elsewhere."""
    res = _claims(make_records(tmp_path / "metrics", seeds=(0,), blocks=False, bigram=None))
    v = [c["verdict"] for c in res["claims"]]
    assert v[:3] == ["not tested (one seed: no noise estimate)"] * 3
    assert v[3] == C.NO_BIGRAM
    assert all(m["delta"].se is None for m in res["claims"][0]["per_method"])
    two = _claims(make_records(tmp_path / "two", seeds=(0, 1), blocks=False))
    assert "evaluation-text variance not included" in two["claims"][0]["per_method"][0]["delta"].basis


def test_claim4_gate_trips_in_the_report(tmp_path):
    root = make_records(tmp_path / "metrics", bigram=3.0)  # the parent (3.55) is worse than its bigram
    out = report.render_all("cpu", metrics_root=root, only=("granularity",))
    assert out["verdicts"][4].startswith("not testable at this tier")
    md = (out["out_dir"] / "claims.md").read_text()
    assert "3.550" in md and "3.000" in md and "would read" not in md


def test_d_eff_in_the_report(rendered):
    res = json.loads((Path(rendered["out_dir"]) / "claims.json").read_text())
    cu = res["claims"][1]["per_method"][0]["catch_up"]["per_budget"]
    first = cu[0]  # the smallest pruned budget is matched by scratch inside the measured range
    assert first["d_eff"] is not None and first["status"].startswith("interpolated")
    lo, hi = first["ci95"]
    assert lo < first["d_eff"] < (hi or math.inf)
    assert cu[-1]["status"].startswith("beyond the largest measured budget") and cu[-1]["ci95"] is None
    table = (Path(rendered["out_dir"]) / "token_scaling.md").read_text()
    assert "D_eff" in table and "Δ(last) − Δ(first)" in table


def test_accuracy_at_chance_is_labelled(tmp_path):
    root = make_records(tmp_path / "metrics", acc_shift=-0.2)  # averages near the 34% chance level
    out = report.render_all("cpu", metrics_root=root, only=("fig1_acc_equal_total", "equal_tokens_downstream",
                                                           "paper_vs_ours_acc"))
    assert (out["out_dir"] / "fig1_acc_equal_total.png").is_file()
    table = (out["out_dir"] / "equal_tokens_downstream.md").read_text()
    assert "| chance |" in table and "°" in table
    claim4 = next(c for c in _claims(root)["claims"] if c["id"] == 4)
    assert all(m["accuracy"]["status"] == "at chance" for m in claim4["per_method"])


def test_rendering_twice_is_byte_identical(tmp_path):
    """Two renders of the same records, from two folders, write the same bytes (no absolute paths, no times)."""
    a = make_records(tmp_path / "a" / "metrics")
    b = tmp_path / "b" / "metrics"
    shutil.copytree(a, b)
    wa, wb = report.render_all("cpu", metrics_root=a), report.render_all("cpu", metrics_root=b)
    names = report.files(wa)
    assert names == report.files(wb) and len(names) > 20
    for name in names:
        assert (wa["out_dir"] / name).read_bytes() == (wb["out_dir"] / name).read_bytes(), name
    assert str(tmp_path) not in (wa["out_dir"] / "provenance.json").read_text()


def test_released_parent_rows_make_a_figure(tmp_path):
    root = make_records(tmp_path / "metrics", released=True, seeds=(0,), downstream=False)
    out = report.render_all("cpu", metrics_root=root, only=("released_parent", "equal_tokens_downstream"))
    assert (out["out_dir"] / "released_parent.png").is_file()
    assert "smollm2-135m" in (out["out_dir"] / "released_parent.csv").read_text()
    assert "not evaluated" in (out["out_dir"] / "equal_tokens_downstream.md").read_text()
    # one seed everywhere: no noise estimate, and the claims say so instead of guessing
    assert out["verdicts"][1] == "not tested (one seed: no noise estimate)"


def test_figures_notebook_runs_with_papermill(tmp_path):
    import nbformat
    import papermill as pm
    from pvs.paths import REPO_ROOT
    nb_path = REPO_ROOT / "notebooks" / "99_figures.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'tier = "cpu"' in params[0].source and "metrics_root = None" in params[0].source
    root = make_records(tmp_path / "metrics", tier="smoke", methods=("minitron-depth", "sparsegpt"))
    pm.execute_notebook(str(nb_path), str(tmp_path / "out.ipynb"), parameters={"tier": "smoke",
                        "metrics_root": str(root)}, kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    # the notebook writes exactly what the library writes from the same records (it holds no logic)
    shutil.copytree(root, tmp_path / "direct" / "metrics")
    report.render_all("smoke", metrics_root=tmp_path / "direct" / "metrics")
    for name in ("claims.md", "claims.json", "equal_tokens.csv", "fig1_loss_vs_tokens.png", "granularity.pdf"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name
