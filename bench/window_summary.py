"""Summarise a GPU window (bench/gpu_check.sh): runs, tokens, model FLOPs and MFU of the grid it trained.

    python bench/window_summary.py --runs RUNS/cpu --wall 412 --status 0 [--probe probe.txt] [--peak-tflops 989]

Model FLOPs follow pvs.model.flops_per_token (PaLM's 6 N + 12 L H Q T, dense even for sparse runs): each run's
train.json holds its model_flops_per_token and tokens. The grid's MFU divides all runs' FLOPs by the grid's
wall time (pruning, evaluation and process start included) and the GPU's bf16 dense peak; the busiest run's
own rate is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

def gpu_peak(explicit: float | None) -> tuple[str, float | None]:
    """(this GPU's name, its bf16 dense peak in TFLOP/s: ``explicit``, else pvs.plan.GPUS's entry for it)."""
    import torch
    from pvs.plan import GPUS
    if not torch.cuda.is_available():
        return "none", explicit
    name = torch.cuda.get_device_name(0)
    known = next((peak / 1e12 for key, (_, peak) in GPUS.items() if key in name.lower()), None)
    return name, explicit or known


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True, help="the tier's runs folder")
    ap.add_argument("--wall", type=float, required=True, help="the grid's wall time in seconds")
    ap.add_argument("--status", type=int, default=0, help="the grid's exit status")
    ap.add_argument("--since", type=float, default=0.0,
                    help="unix time the grid started: runs written before it (an earlier, resumed call) are "
                         "counted apart, not in this call's FLOPs")
    ap.add_argument("--probe", type=Path, default=None, help="bench_train.py's output")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()

    from datetime import datetime
    every = [json.loads(p.read_text()) for p in sorted(args.runs.rglob("train.json"))]
    records = [r for r in every if datetime.fromisoformat(r["written_at"]).timestamp() >= args.since]
    flops = tokens = steps = 0.0
    best = 0.0
    for r in records:
        f = r["model_flops_per_token"] * r["tokens"]
        flops, tokens, steps = flops + f, tokens + r["tokens"], steps + r["steps"]
        if r.get("wall_s"):
            best = max(best, f / r["wall_s"])
    name, peak = gpu_peak(args.peak_tflops)
    state = "finished" if args.status == 0 else f"STOPPED (status {args.status}; 124 = time limit)"
    print(f"GPU: {name}; bf16 dense peak: {f'{peak:g} TFLOP/s' if peak else 'unknown (--peak-tflops)'}")
    earlier = f" (+ {len(every) - len(records)} trained by an earlier call)" if len(every) > len(records) else ""
    print(f"grid: {state} in {args.wall:.0f} s: {len(records)} trained runs{earlier}, {steps:,.0f} optimizer "
          f"steps, {tokens:,.0f} tokens, {flops:.3g} model FLOPs")
    rate = flops / max(args.wall, 1e-9)
    mfu = f" = MFU {100 * rate / (peak * 1e12):.3f}%" if peak else ""
    print(f"grid rate: {rate / 1e12:.3f} TFLOP/s over the wall time{mfu}; fastest single run "
          f"{best / 1e12:.3f} TFLOP/s")
    if args.probe and args.probe.is_file():
        text = args.probe.read_text()
        m = re.search(r"-> ([0-9,.]+) GFLOP/s", text)
        if m and peak:
            g = float(m.group(1).replace(",", ""))
            print(f"throughput probe: {g / 1000:.1f} TFLOP/s = MFU {100 * g / (peak * 1000):.1f}% of the peak")


if __name__ == "__main__":
    main()
