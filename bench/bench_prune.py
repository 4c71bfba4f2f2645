"""Pruning benchmark: every method on the released SmolLM2-135M parent at one ratio, side by side.

    .venv/bin/python bench/bench_prune.py                       # ratio 0.5, all variants, 2 threads
    .venv/bin/python bench/bench_prune.py --variants wanda sparsegpt --calib 16 --threads 1

Prints, per variant: wall time, peak memory (process RSS increase on CPU, allocator peak on GPU),
parameters kept, and perplexity BEFORE any retraining on held-out Wikipedia summaries (our WikiText
stand-in) and BBC News (our CNN/DailyMail stand-in), tokenized with SmolLM2's own tokenizer.
Calibration windows come from the corpus's calib split. The literature's ordering to compare against:
at 50% unstructured sparsity SparseGPT and Wanda are far better than magnitude; 2:4 is worse than
unstructured; structured methods lose much more than sparse ones before retraining.
"""
from __future__ import annotations

import argparse
import time

import torch

from pvs import tiers
from pvs.config import EvalConfig, merge
from pvs.parents import load_parent, smollm2_dir
from pvs.perplexity import stream_loss
from pvs.prune.run import prune_model
from pvs.stages import prepare_data
from pvs.tokens import TokenStream

VARIANTS = ["magnitude", "wanda", "sparsegpt", "magnitude-2:4", "wanda-2:4", "sparsegpt-2:4",
            "shortgpt", "minitron-depth", "minitron-width", "flap", "sheared-llama"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--variants", nargs="*", default=VARIANTS)
    ap.add_argument("--calib", type=int, default=32, help="calibration windows")
    ap.add_argument("--seq", type=int, default=256, help="tokens per calibration / evaluation window")
    ap.add_argument("--eval-tokens", type=int, default=8192, help="tokens per held-out source")
    ap.add_argument("--sheared-steps", type=int, default=300,
                    help="mask-learning steps of sheared-llama (fewer may stop short of the target sparsity)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    parent, tok = load_parent("smollm2-135m")
    cfg = merge(tiers.get("cpu"), {"data": {"tokenizer": str(smollm2_dir())}})
    data = prepare_data(cfg)
    calib, _ = TokenStream(data.shards["calib"]).batch(0, args.calib, args.seq, seed=0)
    ev = EvalConfig(seq_len=args.seq, max_tokens=args.eval_tokens, batch_size=4)

    def ppl(model) -> dict:
        return {src: stream_loss(model, TokenStream(data.shards[f"valid.{src}"]), ev.seq_len, ev.max_tokens,
                                 ev.batch_size)["ppl"] for src in ("wiki", "bbc")}

    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(f"SmolLM2-135M-Instruct (Q4_1 dequantized), ratio {args.ratio}, {args.calib} x {args.seq} calibration "
          f"tokens, {where}")
    t0 = time.time()
    base = ppl(parent)
    print(f"{'variant':16s} {'wall s':>8s} {'peak MB':>8s} {'params kept':>12s} {'ppl wiki':>9s} {'ppl bbc':>9s}")
    print(f"{'(parent)':16s} {time.time() - t0:8.1f} {'':>8s} {sum(p.numel() for p in parent.parameters()):12,} "
          f"{base['wiki']:9.2f} {base['bbc']:9.2f}")
    for variant in args.variants:
        options = ({"steps": args.sheared_steps, "batch_size": 4, "sparsity_tol": None}  # reported, not enforced
                   if variant == "sheared-llama" else {})
        result, m = prune_model(parent, variant, args.ratio, calib, options)
        kept = sum(int(torch.count_nonzero(p)) for p in result.model.parameters())
        p = ppl(result.model)
        print(f"{variant:16s} {m['wall_s']:8.1f} {m['peak_memory_mb']:8.0f} {kept:12,} {p['wiki']:9.2f} "
              f"{p['bbc']:9.2f}", flush=True)
        del result


if __name__ == "__main__":
    main()
