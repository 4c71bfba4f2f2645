"""The paper's dimensionless numbers, and a tier's, side by side: what makes a miniature faithful.

A wind-tunnel model keeps the aircraft's dimensionless numbers; a miniature of the study keeps the paper's:
tokens per non-embedding parameter of the parent, P:N, the retraining budgets as fractions of P, the
pruning ratios (as distinct shapes), the recipe, enough optimizer steps for the schedule to be one, and
attention's share of a training step's FLOPs (set by the sequence length: the paper's 8,192-token sequences
give Llama-3.1-8B 22%; a tiny model at 256 tokens spends half its FLOPs, and more of its time, in attention).

    print(format_regime(tiers.get("cpu")))      # also the head of `pvs plan --tier cpu`
    problems(tiers.get("cpu"))                  # [] when the tier keeps the paper's regime
"""
from __future__ import annotations

import math

from pvs.config import RunConfig
from pvs.shape import RELEASED_SHAPES, ModelShape, flops_per_token, shape_param_counts

# Llama-3.1-8B pretrained on P = 200B DCLM tokens, retrained on N = 50B (the paper's setup; the authors'
# MaxText scripts give the 512 x 8192-token step)
PAPER = {"non_embedding": 6.98e9, "P": 200e9, "N": 50e9, "step_tokens": 512 * 8192, "n_layers": 32,
         "seq_len": 8192, "scaling_fracs": (0.05, 0.15, 0.25, 1.25, 2.5), "ratios": (0.5, 0.6, 0.7, 0.8),
         "warmup_frac": 0.05, "min_lr_frac": 0.1, "betas": (0.9, 0.95), "weight_decay": 0.1, "grad_clip": 1.0}
TARGETS = {"tokens_per_param": 20.0, "p_over_n": 4.0, "min_parent_steps": 300, "min_n_steps": 100,
           "distinct_depth_shapes": 4, "attention_share_within": 0.05}
"""What a faithful miniature must reach (the cpu tier is tested against these)."""


def depth_layers_kept(n_layers: int, ratio: float) -> int:
    """Layers a depth method keeps at ``ratio`` (pvs.prune.shapes.depth_target's rule)."""
    return max(1, round(n_layers * (1 - ratio)))


def attention_share(shape: ModelShape, seq_len: int) -> float:
    """The attention term's share of training FLOPs per token (what pvs.shape.flops_per_token adds for seq_len)."""
    total = flops_per_token(shape, seq_len)
    return (total - flops_per_token(shape, 0)) / total


def regime(cfg: RunConfig) -> dict:
    """The tier's dimensionless numbers."""
    s, t = cfg.study, cfg.train
    P, N = cfg.budget.pretrain_tokens, cfg.budget.retrain_tokens
    step = t.batch_size * t.seq_len
    ratios = sorted(set(s.sweep_ratios) | {s.ratio})
    kept = [depth_layers_kept(cfg.parent.n_layers, r) for r in ratios]
    fracs = sorted(set(s.scaling_fracs))
    return {
        "non_embedding": shape_param_counts(cfg.parent)["non_embedding"], "P": P, "N": N,
        "tokens_per_param": P / shape_param_counts(cfg.parent)["non_embedding"], "p_over_n": P / N,
        "scaling_fracs": fracs, "n_frac": N / P, "ratios": ratios, "depth_layers_kept": kept,
        "distinct_depth_shapes": len(set(kept)), "parent_steps": math.ceil(P / step),
        "n_steps": math.ceil(N / step), "smallest_budget_steps": math.ceil(min(fracs, default=N / P) * P / step),
        "attention_share": attention_share(cfg.parent, t.seq_len), "seq_len": t.seq_len,
        "seeds": len(s.seeds), "warmup_frac": t.warmup_frac, "min_lr_frac": t.min_lr_frac,
        "betas": (t.beta1, t.beta2), "weight_decay": t.weight_decay, "grad_clip": t.grad_clip,
    }


def paper_regime() -> dict:
    P, N, step = PAPER["P"], PAPER["N"], PAPER["step_tokens"]
    kept = [depth_layers_kept(PAPER["n_layers"], r) for r in PAPER["ratios"]]
    return {"non_embedding": PAPER["non_embedding"], "P": P, "N": N, "tokens_per_param": P / PAPER["non_embedding"],
            "p_over_n": P / N, "scaling_fracs": list(PAPER["scaling_fracs"]), "n_frac": N / P,
            "ratios": list(PAPER["ratios"]), "depth_layers_kept": kept, "distinct_depth_shapes": len(set(kept)),
            "parent_steps": math.ceil(P / step), "n_steps": math.ceil(N / step),
            "smallest_budget_steps": math.ceil(PAPER["scaling_fracs"][0] * P / step), "seeds": 1,
            "attention_share": attention_share(RELEASED_SHAPES["meta-llama/Llama-3.1-8B"], PAPER["seq_len"]),
            "seq_len": PAPER["seq_len"],
            "warmup_frac": PAPER["warmup_frac"], "min_lr_frac": PAPER["min_lr_frac"], "betas": PAPER["betas"],
            "weight_decay": PAPER["weight_decay"], "grad_clip": PAPER["grad_clip"]}


def problems(cfg: RunConfig) -> list[str]:
    """Where the tier leaves the paper's regime (empty: it keeps it)."""
    r, p, out = regime(cfg), paper_regime(), []
    if r["tokens_per_param"] < TARGETS["tokens_per_param"]:
        out.append(f"the parent sees {r['tokens_per_param']:.1f} tokens per non-embedding parameter "
                   f"(target >= {TARGETS['tokens_per_param']:g}; paper {p['tokens_per_param']:.1f})")
    if not math.isclose(r["p_over_n"], TARGETS["p_over_n"], rel_tol=0.01):
        out.append(f"P:N is {r['p_over_n']:.2f} (paper 4)")
    if any(not math.isclose(a, b) for a, b in zip(r["scaling_fracs"], p["scaling_fracs"])) \
            or not set(r["scaling_fracs"]) <= set(p["scaling_fracs"]):
        out.append(f"budgets {r['scaling_fracs']} x P are not the paper's fractions {p['scaling_fracs']}")
    if r["distinct_depth_shapes"] < min(TARGETS["distinct_depth_shapes"], len(r["ratios"])):
        out.append(f"ratios {r['ratios']} keep {r['depth_layers_kept']} layers: not distinct depth shapes")
    if r["parent_steps"] < TARGETS["min_parent_steps"] or r["n_steps"] < TARGETS["min_n_steps"]:
        out.append(f"{r['parent_steps']} parent / {r['n_steps']} retraining steps: too few for the schedule")
    if abs(r["attention_share"] - p["attention_share"]) > TARGETS["attention_share_within"]:
        out.append(f"attention is {r['attention_share']:.0%} of a training step's FLOPs at {r['seq_len']} tokens "
                   f"per sequence (paper {p['attention_share']:.0%}, within {TARGETS['attention_share_within']:.0%})")
    for key in ("warmup_frac", "min_lr_frac", "betas", "weight_decay", "grad_clip"):
        if r[key] != p[key]:
            out.append(f"recipe: {key} {r[key]} (paper {p[key]})")
    return out


def _fmt(value) -> str:
    if isinstance(value, float) and value >= 1e5 or isinstance(value, int) and value >= 1e5:
        for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if value >= div:
                return f"{value / div:.3g}{unit}"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


ROWS = (("non_embedding", "parent non-embedding parameters"), ("P", "P: parent pretraining tokens"),
        ("tokens_per_param", "tokens per non-embedding parameter"), ("N", "N: retraining tokens"),
        ("p_over_n", "P : N"), ("scaling_fracs", "retraining budgets (x P)"), ("ratios", "pruning ratios"),
        ("depth_layers_kept", "layers kept by depth pruning"), ("parent_steps", "optimizer steps, parent"),
        ("n_steps", "optimizer steps, N"), ("smallest_budget_steps", "optimizer steps, smallest budget"),
        ("seq_len", "sequence length"), ("attention_share", "attention share of training FLOPs"),
        ("seeds", "seeds per arm"), ("warmup_frac", "warmup share"), ("min_lr_frac", "cosine floor (x peak)"),
        ("betas", "AdamW betas"), ("weight_decay", "weight decay"), ("grad_clip", "gradient clip"))


def format_regime(cfg: RunConfig) -> str:
    """The regime table, the tier beside the paper, and where the tier departs from it."""
    r, p = regime(cfg), paper_regime()
    width = max(len(label) for _, label in ROWS)
    lines = [f"regime: tier {cfg.tier} beside the paper (Llama-3.1-8B, DCLM)",
             f"  {'':{width}}  {'tier ' + cfg.tier:>22}  {'paper':>22}"]
    lines += [f"  {label:{width}}  {_fmt(r[key]):>22}  {_fmt(p[key]):>22}" for key, label in ROWS]
    issues = problems(cfg)
    lines.append("  keeps the paper's regime" if not issues else "  departs from the paper's regime: " + "; ".join(issues))
    return "\n".join(lines)
