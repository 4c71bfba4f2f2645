"""Rendering of the paper's tables and figures from metrics records, and the claim checks (pvs.report,
pvs.claims), on synthetic records shaped like a real smoke-tier record (pvs.study.run_experiment)."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pvs import claims as C
from pvs.catchup import catch_up
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


def _row(arm, variant, budget, ratio, seed, tokens, loss, downstream=False):
    r = copy.deepcopy(TEMPLATE)
    r.update(arm=arm, variant=variant, budget=budget, ratio=ratio, seed=seed, train_tokens=tokens, val_loss=loss,
             granularity=GRAN.get(variant), total_tokens=tokens + (P if arm == "P-R" else 0),
             achieved_ratio=ratio - 0.0003, run=f"cpu/arms/{variant}-{arm}-{budget}-{ratio}-s{seed}",
             data_sha256="4a718735d8df5a03" if arm == "P-R" else "40a47d1947625b51")
    r["ppl"] = {k: math.exp(loss) * (1 + 0.05 * i) for i, k in enumerate(r["ppl"])}
    if arm == "parent":
        r.update(budget=None, variant=None, granularity=None, ratio=0.0)
    if downstream:
        vals = {t: float(np.clip(0.95 - 0.12 * loss + 0.03 * i, 0.05, 0.95)) for i, t in enumerate(TASKS)}
        r["downstream"] = {t: {"value": v, "stderr": 0.045, "n": 100, "n_total": 1000 + 100 * i, "metric": "acc"}
                           for i, (t, v) in enumerate(vals.items())}
        r["downstream_avg"], r["downstream_avg_stderr"] = float(np.mean(list(vals.values()))), 0.016
    return r


def _record(name, rows, tier="cpu", seeds=(0, 1, 2)):
    return {"experiment": name, "tier": tier, "config_hash": "abc123def456", "pretrain_tokens": P, "retrain_tokens": N,
            "code": {"commit": "13a7d580264dfb7e891fa8952e2298e82a16d504", "dirty": False, "pvs": "0.1.0"},
            "config": {"study": {"headline_method": "minitron-depth", "headline_seeds": list(seeds), "seeds": [0],
                                 "methods": list(GRAN), "ratio": 0.5}},
            "rows": rows}


def make_records(root: Path, reverse: bool = False, crossing: bool = False, seeds=(0, 1, 2), downstream=True,
                 released: bool = False, tier: str = "cpu", noise: float = 0.004, methods=tuple(GRAN)) -> Path:
    """Four metrics records. Default: pruning wins at equal training tokens by a gap that shrinks with tokens
    and ratio, and at equal total tokens sparse keeps its edge while depth/width lose it. reverse: all of that
    turned around. crossing: token-scaling arms are power laws whose curves cross at D* = 36 x the smallest budget."""
    rng = np.random.default_rng(0)
    eps = (lambda: float(rng.normal(0, noise)))
    sign = -1 if reverse else 1
    parent = [_row("parent", None, None, 0.0, 0, P, 3.55)]
    eq = list(parent)
    for v, g in ((m, GRAN[m]) for m in methods):
        for s in (seeds if v == "minitron-depth" else (0,)):
            sn = 4.30 + 0.02 * len(v) % 0.1 + eps()
            eq += [_row("S", v, "N", 0.5, s, N, sn, downstream),
                   _row("P-R", v, "N", 0.5, s, N, sn - sign * (0.30 if g == "sparse" else 0.22) + eps(), downstream)]
        edge = sign * (0.12 if g == "sparse" else -0.10)  # Δ_total = S_{P+N} - P-R_N
        pr = [r for r in eq if r["variant"] == v and r["arm"] == "P-R"]
        eq.append(_row("S", v, "P+N", 0.5, 0, P + N, pr[0]["val_loss"] + edge, downstream))
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
                ts += [_row("S", v, f"{f:g}P", 0.5, s, D, ls), _row("P-R", v, f"{f:g}P", 0.5, s, D, lp)]
    rs = list(parent)
    for v in ("minitron-depth", "minitron-width", "sparsegpt"):
        for r in (0.5, 0.6, 0.7, 0.8):
            gap = 0.30 - 0.9 * (r - 0.5) if not reverse else 0.03 + 0.9 * (r - 0.5)
            sn = 4.2 + r + eps()
            lp = sn - gap + eps()
            total = (0.1 if GRAN[v] == "sparse" else -0.1) * sign
            rs += [_row("P-R", v, "N", r, 0, N, lp), _row("S", v, "N", r, 0, N, sn),
                   _row("S", v, "P+N", r, 0, P + N, lp + total)]
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
    assert depth["granularity"] == "depth" and depth["seeds"] == "3/3/1"
    assert 0.18 < float(depth["delta_n"]) < 0.26  # the placed Δ_N of 0.22
    assert "subsampled 800/" in (out / "equal_tokens_downstream.md").read_text()
    assert "0.39" in (out / "paper_vs_ours.md").read_text()  # the paper's published Δ at 10B


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
    row = next(r for r in rec["rows"] if r["arm"] == "S" and r["budget"] == "N" and r["ratio"] == 0.8)
    row["val_loss"] += 0.2
    (root / "ratio_sweep.json").write_text(json.dumps(rec))
    report.render_all("cpu", metrics_root=root, only=only)
    assert all(p.read_bytes() != b for p, b in files.items())


def test_missing_and_corrupt_records_name_the_file_and_the_command(tmp_path):
    root = make_records(tmp_path / "metrics")
    (root / "ratio_sweep.json").unlink()
    with pytest.raises(PvsError, match=r"ratio_sweep\.json.*missing.*pvs study --tier cpu --experiment ratio_sweep"):
        report.render_all("cpu", metrics_root=root)
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
    depth = next(m for m in c1["per_method"] if m["method"] == "minitron-depth")
    assert depth["delta"]["basis"] == "paired over 3 seeds"
    wanda = next(m for m in c1["per_method"] if m["method"] == "wanda")
    assert "noise from the seed spread of minitron-depth" in wanda["delta"]["basis"]
    lo, hi = wanda["delta"]["ci95"]
    assert lo > 0 and hi > lo
    assert "supported" in (Path(rendered["out_dir"]) / "claims.md").read_text()


def _claims(root: Path) -> dict:
    return C.check_claims({n: report.load_record("cpu", n, root) for n in ("equal_tokens", "token_scaling",
                                                                           "ratio_sweep")})


def test_claims_not_supported_when_reversed(tmp_path):
    res = _claims(make_records(tmp_path / "metrics", reverse=True))
    assert [c["verdict"] for c in res["claims"]] == [C.NOT_SUPPORTED] * 4


def test_claims_inconclusive_when_the_effect_is_within_noise():
    flat = {0: 4.0, 1: 4.1, 2: 3.9}
    e = C.difference({0: 4.02, 1: 4.05, 2: 3.95}, flat, C.Noise(None, 0, ""))
    assert e.verdict() == C.WITHIN_NOISE
    assert C.difference({0: 4.1}, {0: 4.0}, C.Noise(None, 0, "")).verdict() == C.NO_NOISE
    assert C.difference({0: 4.1}, {0: 4.0}, C.Noise(0.01, 2, "x")).verdict() == C.SUPPORTED


def test_catch_up_finds_a_placed_crossing(tmp_path):
    # two power laws that meet at 36x the smallest budget (inside the fitted range 1x..50x)
    res = _claims(make_records(tmp_path / "metrics", crossing=True))
    cu = next(m for m in res["claims"][1]["per_method"] if m["method"] == "minitron-depth")["catch_up"]
    d0 = FRACS[0] * P
    assert cu["model"] == "power law per arm"
    assert cu["status"] == "crossing within the fitted range"
    assert cu["d_star"] == pytest.approx(36 * d0, rel=0.03)
    # three budgets: the log-linear gap model; Δ = 0.1 ln(D*/D) with D* = 5e5
    D = [1e5, 3e5, 1e6]
    fit = catch_up(D, [{0: 4.0 + 0.1 * math.log(5e5 / d)} for d in D], [{0: 4.0}] * 3)
    assert fit["model"] == "log-linear gap" and fit["d_star"] == pytest.approx(5e5, rel=1e-6)
    # a gap that stays flat and positive never crosses
    flat = catch_up(D, [{0: 4.3}] * 3, [{0: 4.0}] * 3)
    assert flat["d_star"] is None and flat["status"].startswith("no crossing within the fitted range")


def test_released_parent_rows_make_a_figure(tmp_path):
    root = make_records(tmp_path / "metrics", released=True, seeds=(0,), downstream=False)
    out = report.render_all("cpu", metrics_root=root, only=("released_parent", "equal_tokens_downstream"))
    assert (out["out_dir"] / "released_parent.png").is_file()
    assert "smollm2-135m" in (out["out_dir"] / "released_parent.csv").read_text()
    assert "not evaluated" in (out["out_dir"] / "equal_tokens_downstream.md").read_text()
    # one seed everywhere: no noise estimate, and the claims say so instead of guessing
    assert out["verdicts"][1] == C.NO_NOISE


def test_experiment_names_match_the_study():
    from pvs import study
    assert report.EXPERIMENTS == study.EXPERIMENTS


def test_figures_notebook_runs_with_papermill(tmp_path):
    import nbformat
    import papermill as pm
    nb_path = Path(report.REPO_ROOT) / "notebooks" / "99_figures.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'tier = "cpu"' in params[0].source and "metrics_root = None" in params[0].source
    root = make_records(tmp_path / "metrics", tier="smoke", methods=("minitron-depth", "sparsegpt"))
    pm.execute_notebook(str(nb_path), str(tmp_path / "out.ipynb"), parameters={"tier": "smoke",
                        "metrics_root": str(root)}, kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    assert (tmp_path / "claims.md").is_file() and (tmp_path / "fig1_loss_vs_tokens.png").is_file()
