"""The whole chain at the smoke tier: corpus -> parent -> every experiment notebook -> figures.

One module-scoped run (a few minutes on 2 cores) in a private runs/cache/figures folder, then
checks that each figure and table is written from the metrics records and changes when one does.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, smoke_cache):
    base = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "PVS_RUNS": str(base / "runs"), "PVS_FIGURES": str(base / "figures"),
           "PVS_CACHE": str(smoke_cache), "OMP_NUM_THREADS": "1"}
    for verb in (["pretrain"], ["study"]):
        proc = subprocess.run([sys.executable, "-m", "pvs.cli", *verb, "--tier", "smoke", "--set", "train.threads=1"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return base, env


def test_every_experiment_writes_a_metrics_record(smoke):
    base, _ = smoke
    metrics = base / "figures" / "smoke" / "metrics"
    for name in ("equal_tokens", "token_scaling", "ratio_sweep", "released_parent"):
        rec = json.loads((metrics / f"{name}.json").read_text())
        assert rec["tier"] == "smoke" and rec["code"]["commit"]
        if name == "released_parent":
            assert "skipped" in rec and rec["rows"] == []
            continue
        arms = {(r["arm"], r["budget"]) for r in rec["rows"]}
        assert ("parent", None) in arms and ("P-R", "N" if name != "token_scaling" else "0.05P") in arms
        n_layers = rec["config"]["parent"]["n_layers"]
        for r in rec["rows"]:
            assert r["run"] and r["data_sha256"]
            # the held-out loss is the token mean over every block of every source, as the blocks record it
            blocks = r["val_blocks"]
            assert r["val_loss"] == pytest.approx(sum(blocks["loss_sum"]) / sum(blocks["tokens"]), rel=1e-9)
            assert sum(blocks["tokens"]) == r["val_tokens"]
            if r["arm"] != "parent":  # within the shape rules' tolerance of the ratio asked (pvs.prune.shapes)
                tol = 1 / (2 * n_layers) + 0.005 if r["granularity"] == "depth" else 0.02
                assert abs(r["achieved_ratio"] - r["ratio"]) <= tol, (r["variant"], r["ratio"], r["achieved_ratio"])
    eq = json.loads((metrics / "equal_tokens.json").read_text())["rows"]
    headline = [r for r in eq if r["variant"] == "minitron-depth" and r["budget"] == "N"]
    assert sorted({r["seed"] for r in headline}) == [0, 1]                 # the headline runs several seeds
    assert all("downstream" in r and len(r["downstream"]) == 8 for r in eq)


def test_executed_notebooks_are_kept_for_inspection(smoke):
    base, _ = smoke
    executed = sorted(p.name for p in (base / "runs" / "smoke" / "notebooks").glob("*.ipynb"))
    assert executed == ["01_equal_tokens.ipynb", "02_token_scaling.ipynb", "03_ratio_sweep.ipynb",
                        "04_released_parent.ipynb", "99_figures.ipynb"]


def test_figures_are_rendered_from_records_and_follow_them(smoke):
    base, env = smoke
    figures = base / "figures" / "smoke"
    produced = {p.name for p in figures.iterdir() if p.is_file()}
    for stem in ("fig1_loss_vs_tokens", "fig1_acc_equal_total", "token_scaling", "ratio_sweep", "granularity"):
        assert f"{stem}.png" in produced and f"{stem}.pdf" in produced, stem
    for stem in ("equal_tokens", "token_scaling", "ratio_sweep", "paper_vs_ours"):
        assert f"{stem}.md" in produced and f"{stem}.csv" in produced, stem
    assert "claims.md" in produced and "report.ipynb" in produced
    report = (figures / "report.ipynb").read_text()
    assert "papermill" not in report and str(base) not in report and "image/png" in report
    before = {n: (figures / n).read_bytes() for n in ("equal_tokens.csv", "granularity.png", "report.ipynb")}

    # re-rendering the same records rewrites every output byte for byte (the published notebook too)
    proc = subprocess.run([sys.executable, "-m", "pvs.cli", "study", "--tier", "smoke", "--figures-only"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, old in before.items():
        assert (figures / name).read_bytes() == old, name

    # change one record: rendering (no training) must follow it; in process, as the notebook only calls
    # render_all (test_report checks the notebook's outputs equal render_all's byte for byte)
    from pvs.errors import PvsError
    from pvs.report import render_all
    path = figures / "metrics" / "equal_tokens.json"
    rec = json.loads(path.read_text())
    for r in rec["rows"]:
        if r["arm"] == "S" and r["budget"] == "N":
            r["val_loss"] += 1.0
    path.write_text(json.dumps(rec))
    render_all("smoke", metrics_root=figures / "metrics")
    for name in ("equal_tokens.csv", "granularity.png"):
        assert (figures / name).read_bytes() != before[name], name

    # a corrupt record: one line naming it and how to regenerate it
    path.write_text("{not json")
    with pytest.raises(PvsError, match=r"equal_tokens\.json.*pvs study --tier smoke"):
        render_all("smoke", metrics_root=figures / "metrics")


def test_unknown_experiment_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "pvs.cli", "study", "--tier", "smoke", "--experiment", "nope"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown experiment 'nope'" in proc.stderr


def test_checkpoints_load_and_score_outside_pvs(smoke, tmp_path):
    """A uniform (the parent) and a per-layer-width (FLAP) checkpoint: stock transformers loads each with
    its tokenizer, without importing pvs, and the lm_eval command line of the README scores it."""
    base, env = smoke
    (parent,) = (base / "runs" / "smoke").glob("parent-*")
    proc = subprocess.run([sys.executable, "-m", "pvs.cli", "prune", "--tier", "smoke", "--method", "flap",
                           "--out", str(tmp_path / "flap")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    flap = tmp_path / "flap" / "model"
    assert "import pvs.hetero" in (flap / "README.md").read_text()
    load = ("import sys; from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; "
            "m = M.from_pretrained(sys.argv[1], trust_remote_code=True); t = T.from_pretrained(sys.argv[1]); "
            "ids = t('the king said', return_tensors='pt').input_ids; print(type(m).__name__, m(ids).logits.shape[-1]); "
            "assert not any(k == 'pvs' or k.startswith('pvs.') for k in sys.modules)")
    yaml_dir = Path(env["PVS_CACHE"]) / "tasks" / "yaml"
    for model_dir, cls in ((parent / "model", "LlamaForCausalLM"), (flap, "PvsLlamaForCausalLM")):
        proc = subprocess.run([sys.executable, "-c", load, str(model_dir)], cwd=tmp_path, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout.startswith(f"{cls} 512"), proc.stderr[-2000:]
        lm_eval = Path(sys.executable).parent / "lm_eval"
        proc = subprocess.run([str(lm_eval), "--model", "hf", "--model_args", f"pretrained={model_dir},trust_remote_code=True",
                               "--include_path", str(yaml_dir), "--tasks", "pvs_arc_easy", "--device", "cpu",
                               "--batch_size", "16", "--limit", "4"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "pvs_arc_easy" in proc.stdout and "acc_norm" in proc.stdout, proc.stdout[-2000:]
