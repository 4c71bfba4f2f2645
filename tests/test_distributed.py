"""Multi-process training: 2 CPU processes under `accelerate launch` follow the single-process run step for step;
and accelerate configs that do not fit the machine are refused with one line.

Ten steps (a checkpoint at step 7 included) are enough: a real bug shows from step 1 (below).
Tolerances, from a measurement (TINY model, batch 8 x 16 tokens, lr 1e-2, 40 steps): the logged losses of the
two runs differed by at most 1e-5, which is the rounding of metrics.jsonl (5 decimals), and the final weights by
at most 1.6e-6 (largest weight ~1.2). The runs are not bit-identical because fp32 sums are ordered differently
(each process multiplies a 4-sequence batch instead of 8, and gloo adds the two gradient halves). We allow
1e-4 for the loss (10x the log's rounding) and 1e-4 for the weights (60x the measured drift), far below what a
real bug moves: with both processes reading the first half of the batch (measured) the loss is off by 2e-3 at
step 1 and by 0.1 at step 3.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers import TINY, synthetic_stream
from pvs.errors import PvsError
from pvs.model import build_model
from pvs.accelerate_check import check_accelerate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
STEPS = 10
LOSS_TOL = 1e-4
WEIGHT_TOL = 1e-4

SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from helpers import TINY
from pvs.config import TrainConfig
from pvs.model import build_model
from pvs.tokens import TokenStream
from pvs.train import train
torch.set_num_threads(1)
cfg = TrainConfig(seq_len=16, batch_size=8, lr=1e-2, checkpoint_every=7, log_every=1, threads=1)
train(build_model(TINY, seed=0), TokenStream({stream!r}), cfg, tokens={steps} * 8 * 16, out_dir=sys.argv[1])
"""


def _losses(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(1, STEPS + 1))
    return [ln["loss"] for ln in lines]


def test_two_cpu_processes_match_one_process(tmp_path):
    stream = synthetic_stream(tmp_path / "d.bin")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), stream=str(stream), steps=STEPS))
    # CPU only, one thread per process, even on a machine with GPUs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_2proc.yaml"),
              str(script), str(tmp_path / "two")]
    two = subprocess.Popen(launch, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = subprocess.Popen([sys.executable, str(script), str(tmp_path / "one")], env=env, cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_two, out_one = two.communicate(timeout=240)[0], one.communicate(timeout=240)[0]
    assert two.returncode == 0, out_two[-3000:]
    assert one.returncode == 0, out_one[-3000:]

    rec_one = json.loads((tmp_path / "one" / "train.json").read_text())
    rec_two = json.loads((tmp_path / "two" / "train.json").read_text())
    assert rec_one["processes"] == 1 and rec_two["processes"] == 2   # really two processes, not one
    assert rec_one["tokens"] == rec_two["tokens"] == STEPS * 8 * 16  # same global batch and budget

    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert a[-1] < a[0] - 0.3                                          # it trained (measured: 4.60 -> 4.02)
    assert max(abs(x - y) for x, y in zip(a, b)) < LOSS_TOL, list(zip(a, b))

    wa = load_file(tmp_path / "one" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "two" / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < WEIGHT_TOL, worst
    init = build_model(TINY, seed=0).state_dict()
    moved = max((wa[k] - init[k]).abs().max().item() for k in wa)
    assert moved > 100 * WEIGHT_TOL                                    # the tolerance is tight next to training


# ------------------------------------------------------------------ check_accelerate_config


def _one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(PvsError, match=match) as e:
        check_accelerate_config(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_checked_in_configs_fit_the_machines_they_are_for(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    cpu = check_accelerate_config(CONFIGS / "cpu_2proc.yaml", gpu_count=0)
    assert cpu == {"distributed_type": "MULTI_GPU", "num_processes": 2, "device": "cpu", "gpus": 0,
                   "launcher": "torchrun"}
    ddp = check_accelerate_config(CONFIGS / "ddp_1node.yaml", num_processes=4, gpu_count=4)
    assert ddp["device"] == "cuda" and ddp["num_processes"] == 4
    fsdp = check_accelerate_config(CONFIGS / "fsdp_1node.yaml", num_processes=8, gpu_count=8)
    assert fsdp["distributed_type"] == "FSDP" and fsdp["device"] == "cuda"


def test_gpu_configs_are_refused_on_a_cpu_machine_or_with_too_few_gpus(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    _one_line_error("needs 2 GPUs per machine; this machine has none",
                    CONFIGS / "ddp_1node.yaml", num_processes=2, gpu_count=0)
    _one_line_error("this machine has none", CONFIGS / "fsdp_1node.yaml", num_processes=8, gpu_count=0)
    _one_line_error(r"num_processes=8 per machine but this machine has 4 GPUs",
                    CONFIGS / "ddp_1node.yaml", num_processes=8, gpu_count=4)
    _one_line_error(r"leaves num_processes unset \(-1\)", CONFIGS / "ddp_1node.yaml", gpu_count=8)
    # the CPU config on a GPU machine would silently train on the GPUs
    _one_line_error("is a CPU config", CONFIGS / "cpu_2proc.yaml", gpu_count=2)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert check_accelerate_config(CONFIGS / "cpu_2proc.yaml", gpu_count=2)["device"] == "cpu"


def _write(tmp_path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bad_gpu_ids_multi_cpu_without_mpirun_and_unknown_keys(tmp_path):
    ids = _write(tmp_path, "ids.yaml", "distributed_type: MULTI_GPU\nnum_processes: 2\ngpu_ids: '0,5'\n")
    _one_line_error(r"gpu_ids 0,5 name GPU\(s\) \[5\]", ids, gpu_count=4)
    assert check_accelerate_config(ids, gpu_count=6)["num_processes"] == 2
    few = _write(tmp_path, "few.yaml", "distributed_type: MULTI_GPU\nnum_processes: 3\ngpu_ids: '0,1'\n")
    _one_line_error("gpu_ids lists 2 GPU", few, gpu_count=4)
    mc = _write(tmp_path, "mc.yaml", "distributed_type: MULTI_CPU\nnum_processes: 2\nuse_cpu: true\n")
    _one_line_error("starts ONE process", mc, gpu_count=0)
    typo = _write(tmp_path, "typo.yaml", "distributed_type: MULTI_GPU\nnum_procesess: 2\n")
    _one_line_error("unknown keys", typo, gpu_count=2)
    deep = _write(tmp_path, "ds.yaml", "distributed_type: DEEPSPEED\nnum_processes: 2\n")
    _one_line_error("not supported by pvs.train", deep, gpu_count=2)
    _one_line_error("does not exist", tmp_path / "missing.yaml")
