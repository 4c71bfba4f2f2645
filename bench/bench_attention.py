"""Causal attention, forward and backward: pvs.cpu_attention beside PyTorch's SDPA at several shapes, and the
batched product that decides it (an 8-wide output computed directly and transposed).

    .venv/bin/python bench/bench_attention.py                 # 1 thread (one study worker)
    .venv/bin/python bench/bench_attention.py --threads 2 --repeats 50

The shapes are (batch, query heads, key/value heads, positions, head dim): the cpu tier's at 2,048 tokens a
step first, then larger windows and heads, where SDPA is faster and pvs.cpu_attention hands it the call
(its MAX_HEAD_DIM and MAX_LENGTH come from this table). glibc keeps freed memory (pvs.train.keep_freed_memory),
as in training. Run it with nothing else on the machine.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pvs.cpu_attention import MAX_HEAD_DIM, MAX_LENGTH, causal_attention
from pvs.train import keep_freed_memory

SHAPES = [(32, 4, 2, 64, 8), (8, 4, 2, 256, 8), (32, 4, 2, 64, 16), (32, 4, 2, 64, 64), (8, 4, 2, 256, 64),
          (2, 4, 2, 1024, 8)]


def ms_per_call(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per variant and round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the mean is shown")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()

    a, b = torch.randn(64, 128, 64), torch.randn(64, 64, 8)
    direct = ms_per_call(lambda: torch.bmm(a, b), args.repeats * 5)
    at, bt = b.transpose(1, 2).contiguous(), a.transpose(1, 2).contiguous()
    transposed = ms_per_call(lambda: torch.bmm(at, bt), args.repeats * 5)
    print(f"bmm 64 x (128 x 64) @ (64 x 8): {direct:.3f} ms; the same product transposed, "
          f"64 x (8 x 64) @ (64 x 128): {transposed:.3f} ms ({direct / transposed:.1f}x)")
    print(f"forward + backward, {args.threads} thread(s), mean of {args.rounds} round(s) of {args.repeats} calls")
    print(f"{'B, H, KV, T, D':>18}  {'SDPA ms':>8}  {'pvs ms':>7}  {'pvs/SDPA':>8}  used by pvs")
    for shape in SHAPES:
        n, h, kv, t, d = shape
        q = torch.randn(n, t, h, d).transpose(1, 2).requires_grad_()
        k, v = (torch.randn(n, t, kv, d).transpose(1, 2).requires_grad_() for _ in range(2))
        grad = torch.randn(n, t, h, d)

        def sdpa():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2).backward(grad)

        def ours():
            causal_attention(q, k, v, d ** -0.5).backward(grad)

        times = {"sdpa": 0.0, "ours": 0.0}
        for _ in range(args.rounds):
            times["sdpa"] += ms_per_call(sdpa, args.repeats) / args.rounds
            times["ours"] += ms_per_call(ours, args.repeats) / args.rounds
        used = d <= MAX_HEAD_DIM and t <= MAX_LENGTH
        print(f"{str(shape):>18}  {times['sdpa']:8.2f}  {times['ours']:7.2f}  {times['ours'] / times['sdpa']:7.2f}x  "
              f"{'yes' if used else 'no (SDPA)'}")


if __name__ == "__main__":
    main()
