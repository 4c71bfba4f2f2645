"""The sparse scratch-init ablation: two equal_tokens records that differ only in study.sparse_scratch_init
('authors': kept linear weights redrawn, the parent's embeddings and norms kept; 'fresh': everything redrawn),
compared per sparse method with pvs.stats.contrast (each arm's seed variance plus the evaluation-text variance;
± is the 95% interval).

    bash reproduce.sh --experiment equal_tokens                                  # authors' init (default)
    PVS_FIGURES=figures-fresh bash reproduce.sh --experiment equal_tokens --set study.sparse_scratch_init=fresh
    .venv/bin/python scripts/compare_sparse_init.py figures/cpu/metrics/equal_tokens.json \\
        figures-fresh/cpu/metrics/equal_tokens.json

The committed pairs: the cpu tier as it is (the README's table) and with its earlier 256-token sequences:
    .venv/bin/python scripts/compare_sparse_init.py figures/cpu/ablations/seq64/equal_tokens.json \\
        figures/cpu/ablations/seq64/equal_tokens_sparse_init_fresh.json
    .venv/bin/python scripts/compare_sparse_init.py figures/cpu/ablations/seq256/equal_tokens.json \\
        figures/cpu/ablations/seq256/equal_tokens_sparse_init_fresh.json
"""
from __future__ import annotations

import argparse
import json
import sys

from pvs.stats import contrast


def arm(rows: list[dict], variant: str, kind: str, budget: str) -> list[dict]:
    return [r for r in rows if r["variant"] == variant and r["arm"] == kind and r["budget"] == budget]


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def fmt(e) -> str:
    return f"{e.value:+.3f} ± {e.half:.3f}" if e.half is not None else f"{e.value:+.3f} (one seed: no interval)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("authors", help="equal_tokens record with study.sparse_scratch_init=authors")
    ap.add_argument("fresh", help="equal_tokens record with study.sparse_scratch_init=fresh")
    args = ap.parse_args()
    recs = {name: json.load(open(path)) for name, path in (("authors", args.authors), ("fresh", args.fresh))}
    for name, rec in recs.items():
        got = rec["config"]["study"]["sparse_scratch_init"]
        if got != name:
            fail(f"{name} record has study.sparse_scratch_init={got!r}")
    a, f = recs["authors"]["rows"], recs["fresh"]["rows"]
    sparse = sorted({r["variant"] for r in a if r.get("granularity") == "sparse"})
    for v in sparse:
        pruned = arm(a, v, "P-R", "N")
        if [r["val_loss"] for r in pruned] != [r["val_loss"] for r in arm(f, v, "P-R", "N")]:
            fail(f"the two records' P-R_N runs of {v} differ; they must share everything but the init")
        for budget in ("N", "P+N"):
            sa, sf = arm(a, v, "S", budget), arm(f, v, "S", budget)
            mean = lambda rs: sum(r["val_loss"] for r in rs) / len(rs)
            print(f"{v:14s} S_{budget:4s} loss: authors {mean(sa):.3f}, fresh {mean(sf):.3f}; "
                  f"fresh - authors {fmt(contrast([(1, sf), (-1, sa)]))}; "
                  f"Δ vs P-R_N: authors {fmt(contrast([(1, sa), (-1, pruned)]))}, "
                  f"fresh {fmt(contrast([(1, sf), (-1, pruned)]))}")


if __name__ == "__main__":
    main()
