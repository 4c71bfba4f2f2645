"""The sizing pilot as a figure: a tier's parent against count-based models fitted on as many tokens.

    .venv/bin/python bench/pilot_parent.py                    # the cpu tier's parent (trained by reproduce.sh)
    .venv/bin/python bench/pilot_parent.py --tier cpu --out figures/cpu/pilot_parent.png

Draws the parent's training loss against tokens seen (its metrics log), its validation loss at the end
(every held-out source, token-weighted), and the validation loss of a unigram and a bigram model fitted on
the first D pretraining tokens for D up to P, scored on exactly the tokens the validation loss scores. A
parent worth pruning ends below the bigram fitted on its own P tokens; one that does not has learned
little beyond adjacent-token statistics, and the equal-total-tokens claim cannot be asked of it.
Prints the numbers it draws.
"""
from __future__ import annotations

import argparse
import json

from pvs import stages, tiers
from pvs.config import apply_overrides
from pvs.perplexity import count_baselines
from pvs.tokens import TokenStream


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default=None, help="PNG path (default figures/<tier>/pilot_parent.png)")
    args = ap.parse_args()
    cfg = apply_overrides(tiers.get(args.tier), args.overrides)
    data = stages.prepare_data(cfg)
    run = stages.parent_dir(cfg)
    ev = stages.evaluate(cfg, run, data)
    log = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    P = cfg.budget.pretrain_tokens
    sizes = sorted({int(P * f) for f in (0.05, 0.1, 0.25, 0.5, 1.0)})
    pre, calib = TokenStream(data.shards["pretrain"]), TokenStream(data.shards["calib"])
    counts = [count_baselines(pre, d, data.shards, cfg.eval, len(data.tokenizer), calib) for d in sizes]
    print(f"parent {run.name}: validation loss {ev['val_loss']:.4f} after {P:,} tokens")
    for d, c in zip(sizes, counts):
        print(f"  fitted on {d:>10,} tokens: unigram {c['unigram']:.4f}  bigram {c['bigram']:.4f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot([r["tokens"] for r in log], [r["loss"] for r in log], color="#999999", lw=1, label="parent, training loss")
    ax.plot([P], [ev["val_loss"]], "o", color="#d62728", label=f"parent, validation loss ({ev['val_loss']:.2f})")
    ax.plot(sizes, [c["bigram"] for c in counts], "s--", color="#1f77b4", label="bigram fitted on D tokens")
    ax.plot(sizes, [c["unigram"] for c in counts], "^--", color="#2ca02c", label="unigram fitted on D tokens")
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen / fitted on (D)")
    ax.set_ylabel("loss (nats/token)")
    low = min([c["bigram"] for c in counts] + [r["loss"] for r in log] + [ev["val_loss"]])
    ax.set_ylim(low - 0.1, counts[0]["unigram"] + 0.4)
    ax.set_title(f"tier {cfg.tier}: parent vs count models on the same validation tokens", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = args.out or f"figures/{cfg.tier}/pilot_parent.png"
    fig.savefig(out, metadata={"Software": None})
    print(f"written: {out}")


if __name__ == "__main__":
    main()
