"""What one training step of a tier's parent costs under the choices that set its speed, side by side in one
run: the sequence length at the tier's tokens per step, PyTorch's attention kernel (SDPA or eager), and
torch.compile of the model (its compile time shown apart).

    .venv/bin/python bench/bench_step_variants.py                 # cpu tier parent, 1 thread (one study worker)
    .venv/bin/python bench/bench_step_variants.py --compile       # also torch.compile (~1 min to compile here)

Each variant is the study's own step (pvs.train.train_step through pvs.walltime.seconds_per_step: accelerate,
clipping, schedule, AdamW) on random tokens; the tokens per step stay the tier's, so a ratio is a ratio of
wall time for the same training. Run it with nothing else on the machine: two-core timings move 4-8x when
another process shares the cores.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

from pvs import tiers
from pvs.config import apply_overrides
from pvs.model import build_model
from pvs.regime import attention_share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the study gives each worker 1 here)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    ap.add_argument("--seq-lens", default="256,128,64", help="sequence lengths to compare (comma-separated)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the model")
    args = ap.parse_args()
    import torch
    from pvs.walltime import seconds_per_step

    cfg = apply_overrides(tiers.get(args.tier), args.overrides)
    step_tokens = cfg.train.batch_size * cfg.train.seq_len
    variants = [(T, "sdpa", False) for T in map(int, args.seq_lens.split(","))]
    variants += [(cfg.train.seq_len, "eager", False)] + ([(cfg.train.seq_len, "sdpa", True)] if args.compile else [])
    print(f"tier {cfg.tier} parent, {step_tokens:,} tokens per step, {args.threads} thread(s), "
          f"{args.steps} timed steps")
    print(f"{'seq x batch':>12}  {'attention':9}  {'compiled':8}  {'attn FLOPs':>10}  {'ms/step':>8}  "
          f"{'vs tier':>7}  {'warm-up s':>9}")
    rows = []
    for T, attn, compiled in variants:
        if step_tokens % T:
            ap.error(f"--seq-lens {T} does not divide the {step_tokens} tokens per step")
        run = replace(cfg, train=replace(cfg.train, seq_len=T, batch_size=step_tokens // T))
        model = build_model(cfg.parent, seed=0)
        model.set_attn_implementation(attn)
        if compiled:
            model.compile()
        start = time.perf_counter()
        per_step = seconds_per_step(cfg.parent, run, args.threads, steps=args.steps, model=model)
        rows.append((T, attn, compiled, per_step, time.perf_counter() - start - per_step * args.steps))
    base = next(r[3] for r in rows if r[:3] == (cfg.train.seq_len, "sdpa", False))
    for T, attn, compiled, per_step, warm in rows:
        print(f"{f'{T} x {step_tokens // T}':>12}  {attn:9}  {str(compiled):8}  "
              f"{attention_share(cfg.parent, T):>10.0%}  {per_step * 1e3:8.1f}  {per_step / base:6.2f}x  {warm:9.1f}")

if __name__ == "__main__":
    main()
