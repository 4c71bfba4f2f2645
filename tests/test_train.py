"""The training loop: schedule, data order, exact resumption after SIGKILL, fixed sparse masks, gradient
accumulation."""
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY, synthetic_stream
from pvs.config import TrainConfig
from pvs.errors import PvsError
from pvs.model import build_model
from pvs.tokens import TokenStream
from pvs.train import lr_at, steps_for, train

CFG = TrainConfig(seq_len=16, batch_size=4, lr=1e-2, checkpoint_every=3, log_every=1)


def test_schedule_warmup_then_cosine_to_a_tenth():
    cfg = TrainConfig(lr=1.0, warmup_frac=0.05)
    total = 200
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    assert lrs[0] == pytest.approx(1 / 10) and lrs[9] == pytest.approx(1.0)   # 10 warmup steps
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))                    # rising
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))                    # then falling
    assert lr_at(total, total, cfg) == pytest.approx(0.1)                     # ends at 0.1 x peak
    assert steps_for(1000, TrainConfig(seq_len=10, batch_size=10)) == 10
    assert steps_for(1001, TrainConfig(seq_len=10, batch_size=10)) == 11


def test_stream_order_is_a_function_of_seed_and_step(tmp_path):
    s = TokenStream(synthetic_stream(tmp_path / "a.bin", 2000))
    x1, y1 = s.batch(5, 4, 16, seed=0)
    x2, _ = s.batch(5, 4, 16, seed=0)
    x3, _ = s.batch(5, 4, 16, seed=1)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.equal(x1[:, 1:], y1[:, :-1])                                 # targets are inputs shifted
    n = s.n_windows(16)
    seen = s.sample_indices(0, n, 16, seed=0)
    assert sorted(seen) == list(range(n))                                    # an epoch visits every window once
    assert s.epochs(3 * n * 16, 16) == pytest.approx(3.0)


def test_training_reduces_loss_and_writes_records(tmp_path):
    stream = TokenStream(synthetic_stream(tmp_path / "d.bin"))
    torch.manual_seed(0)
    model = build_model(TINY, seed=0)
    rec = train(model, stream, CFG, tokens=40 * 64, out_dir=tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(1, 41))
    first, last = (sum(ln["loss"] for ln in part) / 5 for part in (lines[:5], lines[-5:]))
    assert last < first - 1.0, (first, last)
    assert rec["steps"] == 40 and rec["tokens"] == 40 * 64 and "code" in rec
    assert rec["cpu_kernels"] and model.config._attn_implementation == "sdpa"  # put back after training
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a finished run is not redone
    again = train(build_model(TINY, seed=1), stream, CFG, tokens=40 * 64, out_dir=tmp_path / "run")
    assert again == rec


SCRIPT = """
import sys, time, torch
sys.path.insert(0, {tests!r})
from helpers import TINY
from pvs.config import TrainConfig
from pvs.model import build_model
from pvs.tokens import TokenStream
import pvs.train as T
torch.set_num_threads(1)
slow = float(sys.argv[2])
if slow:  # slow each step down so the parent process can kill us mid-run
    orig = T.lr_at
    def lr_at(*a):
        time.sleep(slow)
        return orig(*a)
    T.lr_at = lr_at
cfg = TrainConfig(seq_len=16, batch_size=4, lr=3e-3, checkpoint_every=3, log_every=1)
T.train(build_model(TINY, seed=0), TokenStream({stream!r}), cfg, tokens=30 * 64, out_dir=sys.argv[1])
"""


def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    stream = synthetic_stream(tmp_path / "d.bin")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), stream=str(stream)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, script, tmp_path / "full", "0"], check=True, env=env)

    proc = subprocess.Popen([sys.executable, script, tmp_path / "killed", "0.15"], env=env)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not any(ckpts.glob("step-*[0-9].pt")):
        time.sleep(0.05)
    time.sleep(0.4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "train.json").exists(), "the run finished before it was killed"
    subprocess.run([sys.executable, script, tmp_path / "killed", "0"], check=True, env=env)

    rec = json.loads((tmp_path / "killed" / "train.json").read_text())
    assert rec["resumed_from_step"] > 0
    # provenance of each segment, taken when it started: the killed one and the resumed one
    assert [c["from_step"] for c in rec["code_segments"]] == [0, rec["resumed_from_step"]]
    assert rec["code"] == rec["code_segments"][-1] and rec["code"]["commit"]
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))                                         # log has no gaps or repeats


def test_fixed_masks_survive_training_with_their_nm_pattern(tmp_path):
    stream = TokenStream(synthetic_stream(tmp_path / "d.bin"))
    model = build_model(TINY, seed=0)
    masks = {}
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if name.startswith("model.layers") and p.ndim == 2:
            # 2:4 — two zeros in every four consecutive inputs of each row
            scores = torch.rand(p.shape, generator=g).view(p.shape[0], -1, 4)
            keep = torch.ones_like(scores, dtype=torch.bool)
            keep.scatter_(2, scores.topk(2, dim=2, largest=False).indices, False)
            masks[name] = keep.view(p.shape)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, stream, CFG, tokens=10 * 64, out_dir=tmp_path / "run", masks=masks)
    for name, p in model.named_parameters():
        if name in masks:
            assert torch.all(p[~masks[name]] == 0), name
            assert (p[masks[name]] != before[name][masks[name]]).float().mean() > 0.9, name
            assert torch.equal((p != 0).view(p.shape[0], -1, 4).sum(-1), torch.full((p.shape[0], p.shape[1] // 4), 2))
    from pvs.prune.masks import load_masks
    saved = load_masks(tmp_path / "run" / "model")
    assert saved.keys() == masks.keys() and all(torch.equal(saved[k], masks[k]) for k in masks)


def _trained_weights(tmp_path, stream, cfg, name):
    """Weights after three steps of a fixed tiny float64 model trained with ``cfg`` (read back from the
    saved checkpoint)."""
    model = build_model(TINY, seed=0).double()
    train(model, stream, cfg, tokens=3 * cfg.batch_size * cfg.seq_len, out_dir=tmp_path / name)
    return load_file(tmp_path / name / "model" / "model.safetensors")


@pytest.mark.parametrize("recipe", ["paper", "scale-sensitive"])
def test_gradient_accumulation_matches_one_full_batch(tmp_path, recipe):
    """Micro-batches of 2 and 8 sequences accumulate to the gradient of the whole 16-sequence batch: after
    three steps the weights equal those of one micro-batch per step. The model runs in float64: in float32
    the batch shape alone changes matmul rounding, which AdamW's normalisation blows up to ~2e-5 of the
    weights, while float64 leaves ~1e-13 and only the accumulation logic to test. AdamW is blind to a constant
    gradient scale, so the second recipe (eps 1.0, no clipping: a momentum-SGD-like update) also catches
    micro-batch losses summed instead of averaged."""
    stream = TokenStream(synthetic_stream(tmp_path / "d.bin"))
    base = TrainConfig(seq_len=16, batch_size=16, lr=1e-2, warmup_frac=0.0, checkpoint_every=100, log_every=1)
    if recipe == "scale-sensitive":
        base = dataclasses.replace(base, lr=0.5, eps=1.0, grad_clip=0.0)
    whole = _trained_weights(tmp_path, stream, base, "whole")
    start = build_model(TINY, seed=0).double().state_dict()
    assert max(float((whole[k] - start[k]).abs().max()) for k in whole) > 1e-3  # the runs really trained
    for micro in (2, 8):
        acc = _trained_weights(tmp_path, stream, dataclasses.replace(base, micro_batch_size=micro), f"m{micro}")
        for k, w in whole.items():
            assert acc[k].dtype == torch.float64
            assert float((acc[k] - w).abs().max()) <= 1e-9 * float(w.abs().max()), (micro, k)


def test_bad_training_config_is_one_line():
    from pvs.config import RunConfig, apply_overrides
    with pytest.raises(PvsError, match="must divide train.batch_size"):
        apply_overrides(RunConfig(), ["train.batch_size=8", "train.micro_batch_size=3"])
    with pytest.raises(PvsError, match="budget.pretrain_tokens=-5"):
        apply_overrides(RunConfig(), ["budget.pretrain_tokens=-5"])
    assert math.isfinite(lr_at(0, 1, TrainConfig()))


def test_a_run_directory_has_one_writer(tmp_path):
    stream = TokenStream(synthetic_stream(tmp_path / "d.bin"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text(str(os.getpid()))               # held by a live process
    with pytest.raises(PvsError, match="is being written by process"):
        train(build_model(TINY), stream, CFG, tokens=64, out_dir=tmp_path / "run")
    (tmp_path / "run" / ".lock").write_text("999999999")                    # left by a dead one: taken over
    train(build_model(TINY), stream, CFG, tokens=64, out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "train.json").is_file() and not (tmp_path / "run" / ".lock").exists()
