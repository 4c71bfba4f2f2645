"""Does training the seeds of one arm as one batched model pay? S separate training steps against one step of
the S seeds stacked (torch.func.stack_module_state + vmap: every matmul becomes one batched matmul), at a
tier's parent shape, in the same run; and where a step's time goes (the torch profiler's top operators).

    .venv/bin/python bench/bench_seeds.py                       # cpu tier, 3 seeds, 2 threads
    python bench/bench_seeds.py --seeds 5 --threads 4           # on a GPU machine (bench/gpu_check.sh runs it)

Both paths compute the same losses and gradients (printed: the largest difference, relative to the
gradient's size). A step here is forward, backward and AdamW on random tokens; the study's own loop
(pvs.train) adds accelerate and clipping around the same work.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from pvs import tiers
from pvs.config import apply_overrides
from pvs.model import build_model, model_flops_per_token


def timed(fn, repeats: int, device: str) -> float:
    for _ in range(2):  # warm-up: allocator, kernels, optimizer state
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each path")
    args = ap.parse_args()
    from torch.func import functional_call, stack_module_state, vmap

    torch.set_num_threads(args.threads)
    cfg = apply_overrides(tiers.get(args.tier), args.overrides)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    S, B, T = args.seeds, cfg.train.batch_size, cfg.train.seq_len
    models = [build_model(cfg.parent, seed=s).to(device) for s in range(S)]
    x = torch.randint(0, cfg.parent.vocab, (S, B, T), device=device)
    y = torch.randint(0, cfg.parent.vocab, (S, B, T), device=device)

    def loss_of(model, xs, ys):
        with autocast:
            logits = model(input_ids=xs, use_cache=False).logits
        return F.cross_entropy(logits.float().flatten(0, 1), ys.flatten())

    opts = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in models]

    def separate():
        for m, o, s in zip(models, opts, range(S)):
            loss_of(m, x[s], y[s]).backward()
            o.step()
            o.zero_grad(set_to_none=True)

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    stacked_opt = torch.optim.AdamW(params.values(), lr=1e-4)

    def one(p, b, xs, ys):
        with autocast:
            logits = functional_call(base, (p, b), (xs,), {"use_cache": False}).logits
        return F.cross_entropy(logits.float().flatten(0, 1), ys.flatten())

    def batched():
        vmap(one)(params, buffers, x, y).sum().backward()  # seeds are independent: the sum's gradient is each's
        stacked_opt.step()
        stacked_opt.zero_grad(set_to_none=True)

    # same numbers: the stacked gradient of seed s against seed s's own, before any step
    vmap(one)(params, buffers, x, y).sum().backward()
    loss_of(models[S - 1], x[S - 1], y[S - 1]).backward()
    name, ref = next((n, p.grad) for n, p in models[S - 1].named_parameters() if n.endswith("up_proj.weight"))
    diff = (params[name].grad[S - 1] - ref).abs().max().item() / ref.abs().max().item()
    for p in [*params.values(), *(q for m in models for q in m.parameters())]:
        p.grad = None

    t_sep = timed(separate, args.steps, device)
    t_bat = timed(batched, args.steps, device)
    t_sep2 = timed(separate, args.steps, device)  # again, so drift shows
    flops = model_flops_per_token(models[0], T) * B * T * S
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {args.threads} torch threads"
    print(f"machine: {where}; tier {args.tier} parent, {S} seeds of batch {B} x seq {T}")
    print(f"gradient, batched vs separate: largest difference {diff:.1e} of the gradient's largest entry")
    print(f"separate: {min(t_sep, t_sep2) * 1e3:.1f} ms for {S} steps ({flops / min(t_sep, t_sep2) / 1e9:,.1f} "
          f"GFLOP/s; again {max(t_sep, t_sep2) * 1e3:.1f} ms)")
    print(f"batched:  {t_bat * 1e3:.1f} ms for the {S} seeds as one step ({flops / t_bat / 1e9:,.1f} GFLOP/s) "
          f"-> {min(t_sep, t_sep2) / t_bat:.2f}x")

    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            models[0].zero_grad(set_to_none=True)
            loss_of(models[0], x[0], y[0]).backward()
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in rows)
    print(f"one seed's forward + backward, where the time goes ({'GPU' if device == 'cuda' else 'CPU'} self time):")
    for e in rows[:8]:
        print(f"  {100 * getattr(e, key) / total:5.1f}%  {e.key[:70]}  ({e.count // 3} calls per step)")


if __name__ == "__main__":
    main()
