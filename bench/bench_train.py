"""Training throughput: tokens/s and achieved FLOP/s as a fraction of a matmul ceiling measured in the same run.

    .venv/bin/python bench/bench_train.py                 # the cpu tier's parent, 2 threads
    .venv/bin/python bench/bench_train.py --tier smoke --threads 1 --steps 20

The ceiling is the best sustained fp32 (CPU) or bf16 (GPU) square matmul rate on this machine now,
so the ratio stays meaningful whatever else the machine is doing. Model FLOPs per token follow
PaLM's convention (pvs.model.flops_per_token): 6 N + 12 L H Q T. The timed step is the study's own
(pvs.train.start_session / train_step: accelerate, micro-batches, clipping, schedule, AdamW) on a shard of
random tokens, so no corpus is needed, timed as `pvs plan --measure` times it (pvs.walltime.seconds_per_step).
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from pvs import tiers
from pvs.config import apply_overrides
from pvs.model import build_model, flops_per_token, param_counts
from pvs.train import resolve_precision
from pvs.walltime import WARMUP_STEPS, seconds_per_step


def matmul_ceiling(n: int, dtype: torch.dtype, device: str, seconds: float = 3.0) -> float:
    """Best FLOP/s of an n x n x n matmul over ~``seconds``."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    best, t_end = 0.0, time.time() + seconds
    while time.time() < t_end:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30, help=f"timed steps (after {WARMUP_STEPS} warm-up steps)")
    args = ap.parse_args()

    cfg = apply_overrides(tiers.get(args.tier), args.overrides)
    cfg.train.threads = args.threads
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(cfg.train.precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    ceiling = matmul_ceiling(4096 if device == "cuda" else 1024, dtype, device)

    b, t = cfg.train.batch_size, cfg.train.seq_len
    tok_s = b * t / seconds_per_step(cfg.parent, cfg, args.threads, steps=args.steps)
    fpt = flops_per_token(cfg.parent, t)
    achieved = tok_s * fpt
    counts = param_counts(build_model(cfg.parent, seed=0))
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.processor() or platform.machine()}"
    print(f"machine: {where}, {args.threads} torch threads, precision {precision}")
    print(f"model: tier {args.tier} parent, {counts['total']/1e6:.2f}M params ({counts['non_embedding']/1e6:.2f}M "
          f"non-embedding), batch {b} x seq {t}")
    print(f"matmul ceiling ({dtype}, measured now): {ceiling/1e9:,.1f} GFLOP/s")
    print(f"training: {tok_s:,.0f} tokens/s, {fpt/1e6:.1f} MFLOP/token -> {achieved/1e9:,.1f} GFLOP/s "
          f"= {achieved/ceiling:.1%} of the matmul ceiling")


if __name__ == "__main__":
    main()
