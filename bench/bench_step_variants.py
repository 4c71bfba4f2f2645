"""What one training step of a tier's parent costs under the choices that set its speed, side by side in one
run: the sequence length at the tier's tokens per step; pvs's CPU pieces (glibc keeping freed memory,
pvs.lm_loss's blocked loss, pvs.cpu_attention), each switched off alone and all together (transformers'
stock step); PyTorch's eager attention; torch.compile of the model (its compile time shown apart).

    .venv/bin/python bench/bench_step_variants.py                 # cpu tier parent, 1 thread (one study worker)
    .venv/bin/python bench/bench_step_variants.py --rounds 3      # each variant 3 times, interleaved
    .venv/bin/python bench/bench_step_variants.py --compile       # also torch.compile (~1 min to compile here)

Each variant is the study's own step (pvs.train.train_step through pvs.walltime.seconds_per_step: accelerate,
clipping, schedule, AdamW) on random tokens, in a fresh process of its own (the allocator setting lasts for
a process); the tokens per step stay the tier's, so a ratio is a ratio of wall time for the same training.
Run it with nothing else on the machine: two-core timings move 4-8x when another process shares the cores.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from dataclasses import replace

from pvs import tiers
from pvs.config import RunConfig, apply_overrides, from_dict, to_dict
from pvs.regime import attention_share

OFF = {"allocator": "glibc gives freed memory back (pvs.train.keep_freed_memory off)",
       "loss": "loss from the full logits (pvs.lm_loss off)",
       "attention": "SDPA attention (pvs.cpu_attention off)"}


def _time_variant(cfg_dict: dict, seq_len: int, off: tuple, attn: str, compiled: bool, threads: int,
                  steps: int) -> tuple[float, float]:
    """(seconds per step, seconds of warm-up and compiling) of one variant, in this (fresh) process."""
    import pvs.cpu_attention
    import pvs.train
    from pvs.model import build_model
    from pvs.walltime import seconds_per_step

    if "allocator" in off:
        pvs.train.keep_freed_memory = lambda: False
    if "loss" in off:
        stock_loss = pvs.train.next_token_loss
        pvs.train.next_token_loss = lambda model, x, y, fused: stock_loss(model, x, y, False)
    pvs.cpu_attention.ATTENTION = attn  # the implementation a CPU training session switches to
    cfg = from_dict(RunConfig, cfg_dict)
    step_tokens = cfg.train.batch_size * cfg.train.seq_len
    run = replace(cfg, train=replace(cfg.train, seq_len=seq_len, batch_size=step_tokens // seq_len))
    model = build_model(cfg.parent, seed=0)
    if compiled:
        model.compile()
    start = time.perf_counter()
    per_step = seconds_per_step(cfg.parent, run, threads, steps=steps, model=model)
    return per_step, time.perf_counter() - start - per_step * steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the study gives each worker 1 here)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    ap.add_argument("--rounds", type=int, default=1, help="times each variant runs (interleaved); the median")
    ap.add_argument("--seq-lens", default="256,128,64", help="sequence lengths to compare (comma-separated)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the model")
    args = ap.parse_args()

    cfg = apply_overrides(tiers.get(args.tier), args.overrides)
    step_tokens = cfg.train.batch_size * cfg.train.seq_len
    T = cfg.train.seq_len
    variants = [(t, (), "pvs_cpu_causal", False, "pvs step") for t in map(int, args.seq_lens.split(","))]
    variants += [(T, (piece,), "sdpa" if piece == "attention" else "pvs_cpu_causal", False, OFF[piece])
                 for piece in OFF]
    variants += [(T, tuple(OFF), "sdpa", False, "transformers' stock step (all three off)"),
                 (T, ("attention",), "eager", False, "eager attention (pvs.cpu_attention off)")]
    if args.compile:
        variants.append((T, (), "pvs_cpu_causal", True, "pvs step, torch.compile"))
    for t, *_ in variants:
        if step_tokens % t:
            ap.error(f"--seq-lens {t} does not divide the {step_tokens} tokens per step")
    print(f"tier {cfg.tier} parent, {step_tokens:,} tokens per step, {args.threads} thread(s), "
          f"{args.steps} timed steps, median of {args.rounds} round(s), each variant in a fresh process")
    times: dict[int, list] = {i: [] for i in range(len(variants))}
    ctx = mp.get_context("spawn")
    for _ in range(args.rounds):
        for i, (t, off, attn, compiled, _) in enumerate(variants):
            with ctx.Pool(1) as pool:
                times[i].append(pool.apply(_time_variant, (to_dict(cfg), t, off, attn, compiled, args.threads,
                                                           args.steps)))
    per_step = {i: statistics.median(s for s, _ in v) for i, v in times.items()}
    base = next(per_step[i] for i, v in enumerate(variants) if v[0] == T and not v[1] and not v[3])
    print(f"{'seq x batch':>12}  {'attn FLOPs':>10}  {'ms/step':>8}  {'range':>11}  {'vs pvs':>7}  {'warm-up s':>9}  "
          f"variant")
    for i, (t, off, attn, compiled, label) in enumerate(variants):
        warm = statistics.median(w for _, w in times[i])
        spread = f"{min(s for s, _ in times[i]) * 1e3:.0f}-{max(s for s, _ in times[i]) * 1e3:.0f}"
        print(f"{f'{t} x {step_tokens // t}':>12}  {attention_share(cfg.parent, t):>10.0%}  "
              f"{per_step[i] * 1e3:8.1f}  {spread:>11}  {per_step[i] / base:6.2f}x  {warm:9.1f}  {label}")


if __name__ == "__main__":
    main()
