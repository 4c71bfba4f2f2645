"""The GPU window's command line (bench/gpu_check.sh), shrunk to seconds and run on this CPU as the device
machine would run it: no lm-eval, datasets, papermill or nbformat importable (a GPU machine's preinstalled
Python has none of them), data from a tokens folder without its corpus, everything written under $OUT."""
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from pvs import stages, tiers
from pvs.config import apply_overrides

ROOT = Path(__file__).resolve().parent.parent
ABSENT_ON_THE_DEVICE = ("lm_eval", "datasets", "papermill", "nbformat", "jupyter_client", "ipykernel")


def test_the_window_runs_on_the_preinstalled_stack_from_carried_shards(tmp_path, smoke_cache, monkeypatch):
    monkeypatch.setenv("PVS_CACHE", str(smoke_cache))
    cfg = apply_overrides(tiers.get("smoke"), [])
    stages.prepare_data(cfg)  # the shards the window carries, built here as --prepare does
    cache = tmp_path / "cache"  # what the device gets: the tokens folder alone
    shutil.copytree(stages.tokens_dir(cfg, smoke_cache), stages.tokens_dir(cfg, cache))
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text("import sys\nfor m in %r:\n    sys.modules[m] = None\n"
                                            % (ABSENT_ON_THE_DEVICE,))
    out = tmp_path / "out"
    env = {**os.environ, "WINDOW_TEST": "1", "OUT": str(out), "PVS_CACHE": str(cache), "PYTHONPATH": str(block),
           "WINDOW_WORK": str(tmp_path / "work"),
           "PY": str(ROOT / ".venv" / "bin" / "python")}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    log = (out / "log.txt").read_text() if (out / "log.txt").is_file() else proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    assert not (stages.corpus_dir(cfg, cache) / "manifest.json").exists()  # no corpus was built there
    summary = (out / "summary.txt").read_text()
    assert "grid: finished" in summary and "trained runs" in summary
    with tarfile.open(out / "window.tar.gz") as tar:
        names = tar.getnames()
        records = [json.load(tar.extractfile(n)) for n in names if n.endswith("train.json")]
        metrics = {Path(n).stem: json.load(tar.extractfile(n)) for n in names if "/metrics/" in n}
    assert set(metrics) == {"equal_tokens", "ratio_sweep"}
    assert {row["seed"] for row in metrics["equal_tokens"]["rows"] if row["arm"] != "parent"} == {0, 1}
    ran = {(r["arm"]["variant"], r["arm"]["init"], r["arm"]["seed"]) for r in records if "arm" in r}
    assert {("sparsegpt-2:4", "scratch", 1), ("minitron-depth", "pruned", 0)} <= ran
    assert all(r["model_flops_per_token"] > 0 for r in records)
    assert any(n.endswith(".png") for n in names)  # the figures, rendered without a notebook
    assert "batched:" in log and "gradient, batched vs separate" in log  # the seeds benchmark ran

    # run again at once, as after a time limit: every finished run is reused, none trained again
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (out / "log.txt").read_text()[-3000:]
    assert f"0 trained runs (+ {len(records)} trained by an earlier call)" in (out / "summary.txt").read_text()
