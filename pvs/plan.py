"""Dry-run plan of a tier: every run of the study with its steps, tokens, training FLOPs and GPU-hours
(the check of an accelerate launch config against this machine is ``pvs.accelerate_check``).

Nothing is trained, loaded or downloaded. The runs are the study's (``pvs.experiments.experiment_arms``): parent
pretraining P, one pruning per (variant, ratio), and every training arm: P-R_N (pruned, retrained on N
tokens of the retrain split), S_N and S_{P+N} (same architecture from random init, pretrain split), for
the equal-token, token-scaling (N = 10/30/50/250/500B in the paper tier) and ratio-sweep experiments.
Arms the study shares are planned once (e.g. scratch arms of methods with the same target shape, or the
50B scaling arm that is also the equal-tokens arm); a row lists every experiment that uses it.

    print(format_plan(tiers.get("paper"), gpu="H100", mfu=0.4, rounding="exact"))
    p = plan(tiers.get("paper"))            # p.rows: list of dicts; p.totals, p.assumptions, p.warnings

Arithmetic (every number is printed with the assumption it rests on):
- tokens per step = train.batch_size x train.seq_len (paper tier: 512 x 8192 = 4,194,304).
- rounding="exact" (default): steps = ceil(tokens / tokens_per_step), as pvs.train does; 50B -> 11,921 steps.
  rounding="authors": the authors' scripts count a step as tokens_per_step rounded to one significant
  figure (4,194,304 -> 4M) and map 50B -> 12,500 steps, so a run really sees steps x tokens_per_step tokens:
  their "200B" parent saw 50,000 x 4,194,304 = 209.7B tokens.
- FLOPs of a run = pvs.model.flops_per_token(shape, seq_len) x tokens actually seen (6 N + 12 L H Q T per
  token). Structured arms use the target shape of ``pvs.prune.shapes.target_shape`` (depth methods: the depth
  target; width methods: the width target; a method whose widths differ per layer is planned at the uniform
  width target of the same parameter count). Sparse arms are planned at DENSE FLOPs: masked weights are
  still multiplied on dense hardware.
- GPU-hours = FLOPs / (peak bf16 dense FLOP/s x MFU) / 3600. MFU is an assumption (default 40 %).
- Pruning costs what the method's registry entry states (``MethodSpec.cost``): by default one forward pass
  of the parent over its calibration tokens (a forward is a third of a training step's FLOPs); a method
  that trains while pruning (mask learning) costs the parent's training FLOPs on its budget.
- Data repetition: a run's epochs = tokens / tokens of its split. The split sizes come from the built token
  shards when they exist, else (DCLM) from the authors' tokenized DCLM subset of ~260B tokens cut by the
  document fractions of cfg.data (approximate: the fractions are of documents, not tokens).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pvs.config import RunConfig
from pvs.errors import PvsError, check
from pvs.experiments import EXPERIMENTS, experiment_arms
from pvs.regime import format_regime
from pvs.shape import RELEASED_SHAPES, ModelShape, flops_per_token, shape_param_counts

GPUS = {
    "h100": ("NVIDIA H100 SXM", 989e12),
    "h200": ("NVIDIA H200 SXM (H100 compute)", 989e12),
    "a100": ("NVIDIA A100 SXM", 312e12),
}
"""bf16 dense peak FLOP/s (no 2:4 sparsity speed-up) of the GPUs a plan can be priced on."""
ROUNDINGS = ("exact", "authors")
DEFAULT_MFU = 0.4
DCLM_TOKENS = 260e9
"""The authors' tokenized DCLM-Baseline subset (Llama-3 tokenizer, 64 shards; their Hugging Face dataset
Zephyr271828/dclm-260b, "260B tokenized tokens"). The full DCLM-Baseline is ~4T tokens; pvs streams a bounded part of it (data.max_docs)."""


@dataclass
class Plan:
    """What ``plan`` returns: one dict per run, the totals, the assumptions and the warnings."""

    rows: list[dict]
    totals: dict
    assumptions: dict
    warnings: list[str] = field(default_factory=list)
    shapes: dict = field(default_factory=dict)
    """run name -> the ModelShape it trains (pvs.walltime times a few steps of each on this machine)."""


# ------------------------------------------------------------------ arithmetic


def gpu_peak(gpu: str) -> tuple[str, float]:
    """(name, bf16 dense peak FLOP/s) of a GPU key (case-insensitive: H100, H200, A100)."""
    key = str(gpu).lower().replace("-", "").replace(" ", "")
    check(key in GPUS, f"gpu={gpu!r}; allowed: {', '.join(k.upper() for k in GPUS)}")
    return GPUS[key]


def authors_step_tokens(tokens_per_step: int) -> int:
    """tokens_per_step rounded to one significant figure, as the authors count a step (4,194,304 -> 4M)."""
    check(tokens_per_step > 0, f"tokens_per_step={tokens_per_step} must be positive")
    scale = 10 ** int(math.floor(math.log10(tokens_per_step)))
    return int(round(tokens_per_step / scale) * scale)


def steps_for_budget(tokens: float, tokens_per_step: int, rounding: str = "exact") -> int:
    """Optimizer steps for a token budget: ceil(tokens / tokens_per_step) ("exact", what pvs trains), or
    the authors' count ceil(tokens / step rounded to one significant figure) ("authors")."""
    check(rounding in ROUNDINGS, f"rounding={rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    check(tokens > 0, f"token budget {tokens} must be positive")
    per_step = tokens_per_step if rounding == "exact" else authors_step_tokens(tokens_per_step)
    # integer arithmetic when possible: 50e9 / 4e6 must give exactly 12500, not 12500.000000001
    t = int(tokens) if float(tokens).is_integer() else tokens
    return -(-t // per_step) if isinstance(t, int) else math.ceil(t / per_step)


def gpu_hours(flops: float, peak: float, mfu: float) -> float:
    """Hours on one GPU: FLOPs / (peak x MFU) / 3600."""
    check(0 < mfu <= 1, f"mfu={mfu!r} must be in (0, 1]")
    return flops / (peak * mfu) / 3600.0


def fmt_tokens(n: float) -> str:
    """50e9 -> '50B', 209.7e9 -> '209.7B', 400_000 -> '400k'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g}{unit}"
    return f"{n:g}"


def _shape_str(s: ModelShape) -> str:
    return f"L{s.n_layers} d{s.hidden} h{s.n_heads}/{s.n_kv_heads}x{s.attn_head_dim} ffn{s.ffn}"


# ------------------------------------------------------------------ data supply


def split_tokens(cfg: RunConfig, corpus_tokens: float | None = None) -> tuple[dict, str]:
    """Tokens available per split ({'pretrain': n, 'retrain': n} or None when unknown) and where that came from.
    ``corpus_tokens`` overrides the corpus size (then cut by the document fractions of cfg.data)."""
    d = cfg.data
    fracs = {"retrain": d.retrain_frac, "pretrain": 1.0 - d.retrain_frac - d.calib_frac - d.valid_frac}
    if corpus_tokens is not None:
        check(corpus_tokens > 0, f"corpus_tokens={corpus_tokens!r} must be positive")
        return ({k: f * corpus_tokens for k, f in fracs.items()},
                f"{fmt_tokens(corpus_tokens)} tokens given, cut by the document fractions (approximate)")
    built = _built_split_tokens(cfg)
    if built:
        return built, "the built token shards"
    if d.source == "dclm":
        return ({k: f * DCLM_TOKENS for k, f in fracs.items()},
                f"~{fmt_tokens(DCLM_TOKENS)} tokens (the authors' tokenized DCLM subset) cut by the document "
                f"fractions retrain={d.retrain_frac:g}, pretrain={fracs['pretrain']:g} (approximate)")
    return {"pretrain": None, "retrain": None}, "unknown: the token shards are not built yet (run `pvs data`)"


def _built_split_tokens(cfg: RunConfig) -> dict | None:
    """Token counts of this config's shards if `pvs data` has built them (read from their .json; no build)."""
    import json

    from pvs import stages
    tok_dir = stages.tokens_dir(cfg)
    out = {}
    for split in ("pretrain", "retrain"):
        meta = tok_dir / f"{split}.json"
        if not meta.is_file():
            return None
        out[split] = json.loads(meta.read_text())["tokens"]
    return out


# ------------------------------------------------------------------ the plan


def _spec(variant: str):
    from pvs.prune.registry import get_method, parse_variant
    return get_method(parse_variant(variant)[0])


def _arm_shape(parent: ModelShape, variant: str, ratio: float) -> tuple[ModelShape, str, str]:
    """(shape trained, FLOP note, key of the architecture a scratch arm shares)."""
    from pvs.prune.shapes import target_shape
    spec = _spec(variant)
    if spec.granularity == "sparse":
        return parent, "sparse: dense FLOPs", f"mask:{variant}:{ratio}"
    shape = target_shape(parent, ratio, "depth" if spec.granularity == "depth" else "width")
    if spec.per_layer_widths:
        return shape, f"{spec.name}: per-layer widths; planned at the width target", f"{spec.name}:{ratio}"
    return shape, "", f"shape:{_shape_str(shape)}"


def _released_parent_shape(spec: str) -> ModelShape:
    if spec in RELEASED_SHAPES:
        return RELEASED_SHAPES[spec]
    cfg_file = Path(spec) / "config.json"
    if cfg_file.is_file():
        from transformers import AutoConfig

        from pvs.model import shape_of
        return shape_of(AutoConfig.from_pretrained(spec))
    raise PvsError(f"study.parent={spec!r}: its shape is not known without downloading it; allowed: "
                   f"{', '.join(RELEASED_SHAPES)} or a local model directory (or pass parent_shape=)")


def plan(cfg: RunConfig, gpu: str = "H100", mfu: float = DEFAULT_MFU, rounding: str = "exact",
         corpus_tokens: float | None = None, n_gpus: int = 1, parent_shape: ModelShape | None = None,
         experiments: tuple[str, ...] = EXPERIMENTS) -> Plan:
    """Every run of the study under ``cfg`` with steps, tokens, FLOPs and GPU-hours on ``gpu`` at ``mfu``
    (see the module docstring for the arithmetic). ``n_gpus`` only divides the total into wall-clock days."""

    gpu_name, peak = gpu_peak(gpu)
    check(0 < mfu <= 1, f"mfu={mfu!r} must be in (0, 1]")
    check(rounding in ROUNDINGS, f"rounding={rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    check(isinstance(n_gpus, int) and n_gpus > 0, f"n_gpus={n_gpus!r} must be a positive integer")
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    check(not unknown, f"experiments {unknown}; allowed: {', '.join(EXPERIMENTS)}")
    T, tps = cfg.train.seq_len, cfg.train.batch_size * cfg.train.seq_len
    released = cfg.study.released_parent
    given = cfg.study.parent  # a released parent pruned by every experiment instead of our pretrained one
    parent = parent_shape or (_released_parent_shape(given) if given else cfg.parent)
    parent.validate()
    supply, supply_source = split_tokens(cfg, corpus_tokens)
    warnings: list[str] = []
    repeats: dict[tuple, list[str]] = {}  # (split, tokens) -> runs that see that split more than once

    def train_row(**row) -> dict:
        shape: ModelShape = row["shape_obj"]
        steps = steps_for_budget(row["tokens_requested"], tps, rounding)
        tokens = steps * tps
        fpt = flops_per_token(shape, T)
        counts = shape_param_counts(shape)
        avail = supply.get(row["split"])
        epochs = tokens / avail if avail else None
        row.update(shape=_shape_str(shape), params=counts["total"], non_embedding=counts["non_embedding"],
                   steps=steps, tokens=tokens, flops_per_token=fpt, flops=fpt * tokens,
                   gpu_hours=gpu_hours(fpt * tokens, peak, mfu), epochs=epochs)
        if epochs is not None and epochs > 1:
            repeats.setdefault((row["split"], tokens), []).append(row["run"])
        return row

    rows: list[dict] = []
    if released:
        rows.append(dict(run=f"P (released: {released})", stage="parent", experiments=list(experiments),
                         variant=None, ratio=0.0, seed=None, budget="P", split=None, shape=_shape_str(parent),
                         params=shape_param_counts(parent)["total"],
                         non_embedding=shape_param_counts(parent)["non_embedding"], tokens_requested=0, steps=0,
                         tokens=0, flops_per_token=0.0, flops=0.0, gpu_hours=0.0, epochs=None,
                         note="released checkpoint: not trained here"))
    else:
        rows.append(train_row(run="P", stage="pretrain", experiments=list(experiments), variant=None, ratio=0.0,
                              seed=cfg.train.seed, budget="P", split="pretrain", shape_obj=parent,
                              tokens_requested=cfg.budget.pretrain_tokens, note="parent pretraining"))

    # training arms, deduplicated like pvs.study's run directories
    arms: dict[tuple, dict] = {}
    prunings: dict[tuple, dict] = {}
    for exp in experiments:
        for arm in experiment_arms(exp, cfg):
            shape, note, arch = _arm_shape(parent, arm.variant, arm.ratio)
            prunings.setdefault((arm.variant, arm.ratio), {"shape": shape, "experiments": []})
            if exp not in prunings[(arm.variant, arm.ratio)]["experiments"]:
                prunings[(arm.variant, arm.ratio)]["experiments"].append(exp)
            if arm.init == "pruned":
                key = ("pruned", arm.variant, arm.ratio, arm.tokens, arm.seed)
                name = f"P-R_{fmt_tokens(arm.tokens)} {arm.variant} r{arm.ratio:g} s{arm.seed}"
                split = "retrain"
            else:
                key = ("scratch", arch, arm.tokens, arm.seed)
                label = "S_{P+N}" if arm.budget == "P+N" else f"S_{fmt_tokens(arm.tokens)}"
                name = f"{label} {arm.variant} r{arm.ratio:g} s{arm.seed}"
                split = "pretrain"
            if key in arms:
                if exp not in arms[key]["experiments"]:
                    arms[key]["experiments"].append(exp)
                if arm.variant not in arms[key]["shared_by"]:
                    arms[key]["shared_by"].append(arm.variant)
                alias = name.split(" ")[0]
                if alias != arms[key]["run"].split(" ")[0] and alias not in arms[key]["aliases"]:
                    arms[key]["aliases"].append(alias)  # e.g. S_{P+N} is also the 250B scaling arm
                continue
            arms[key] = train_row(run=name, stage="retrain" if arm.init == "pruned" else "scratch",
                                  experiments=[exp], variant=arm.variant, ratio=arm.ratio, seed=arm.seed,
                                  budget=arm.budget, split=split, shape_obj=shape, tokens_requested=arm.tokens,
                                  note=note, shared_by=[arm.variant], aliases=[])

    for (variant, ratio), p in prunings.items():
        rows.append(_prune_row(cfg, parent, variant, ratio, p, peak, mfu))
    for row in arms.values():
        shared, aliases = row.pop("shared_by"), row.pop("aliases")
        extra = (["also " + ", ".join(aliases)] if aliases else []) + \
                (["shared by " + ", ".join(shared)] if len(shared) > 1 else [])
        row["note"] = "; ".join(x for x in [row["note"], *extra] if x)
        rows.append(row)
    shapes = {row["run"]: row.pop("shape_obj") for row in rows if "shape_obj" in row}

    for (split, tokens), runs in repeats.items():
        shown = ", ".join(runs[:3]) + (f", ... ({len(runs)} runs)" if len(runs) > 3 else "")
        warnings.append(f"{fmt_tokens(tokens)} tokens exceed the {split} split (~{fmt_tokens(supply[split])} "
                        f"tokens): {tokens / supply[split]:.2f} epochs, data repeats: {shown}")
    total_flops = sum(r["flops"] for r in rows)
    total_hours = sum(r["gpu_hours"] for r in rows)
    totals = {"runs": len(rows), "flops": total_flops, "gpu_hours": total_hours,
              "days_on_n_gpus": total_hours / n_gpus / 24, "n_gpus": n_gpus}
    assumptions = {
        "tier": cfg.tier, "gpu": gpu_name, "peak_flops": peak, "mfu": mfu, "rounding": rounding,
        "tokens_per_step": tps, "batch_size": cfg.train.batch_size, "seq_len": T,
        "step_tokens_counted": tps if rounding == "exact" else authors_step_tokens(tps),
        "data_supply": {k: v for k, v in supply.items()}, "data_supply_source": supply_source,
        "flops": "flops_per_token = 6 N + 12 L H Q T (N: matmul weights incl. the output head) x tokens seen; "
                 "sparse arms at dense FLOPs",
    }
    if not released:
        warnings.append("released-parent comparison not planned (study.released_parent is empty)")
    return Plan(rows, totals, assumptions, warnings, shapes)


def _prune_row(cfg: RunConfig, parent: ModelShape, variant: str, ratio: float, p: dict, peak: float,
               mfu: float) -> dict:
    """Pruning cost, as the method's registry entry states it; by default one forward pass of the parent
    over the calibration tokens (a forward is 1/3 of a training step's FLOPs)."""
    spec = _spec(variant)
    samples, seq_len = spec.calibration(cfg)
    calib_tok = samples * seq_len
    if spec.cost is not None:
        flops, note = spec.cost(cfg, parent, p["shape"], samples, seq_len)
    elif not spec.needs_calib:
        flops, note = 0.0, "data-free"
    else:
        flops = flops_per_token(parent, seq_len) / 3 * calib_tok
        note = f"one layer-wise pass over {fmt_tokens(calib_tok)} calibration tokens"
    return dict(run=f"prune {variant} r{ratio:g}", stage="prune", experiments=p["experiments"], variant=variant,
                ratio=ratio, seed=None, budget=None, split="calib", shape=_shape_str(p["shape"]),
                params=shape_param_counts(p["shape"])["total"],
                non_embedding=shape_param_counts(p["shape"])["non_embedding"], tokens_requested=calib_tok,
                steps=0, tokens=calib_tok, flops_per_token=None, flops=flops,
                gpu_hours=gpu_hours(flops, peak, mfu) if flops else 0.0, epochs=None,
                note=f"{spec.granularity}; {note} (approximate)")


def method_settings(cfg: RunConfig, variants: list[str]) -> list[dict]:
    """Per pruning method: the authors' calibration (source, size, script), what pvs draws at this tier,
    and what ranks the units removed; from the registry entries."""
    out = []
    for name in dict.fromkeys(_spec(v).name for v in variants):
        spec = _spec(name)
        a = spec.authors
        samples, seq_len = spec.calibration(cfg) if spec.needs_calib else (0, 0)
        out.append({"method": name, "granularity": spec.granularity, "scorer": spec.scorer,
                    "authors": (f"{a.samples:,} x {a.seq_len:,} {a.source}" if a else "data-free"),
                    "script": a.script if a else "",
                    "pvs": ("data-free" if not spec.needs_calib else
                            f"batches of {samples:,} x {seq_len:,} from the retrain split ({cfg.study.calibration})"
                            if spec.trains else
                            f"{samples:,} x {seq_len:,} of the calib split ({cfg.study.calibration})")})
    return out


def _fmt_hours(h: float) -> str:
    return "0" if h == 0 else f"{h:.2g}" if h < 10 else f"{h:,.0f}"


def format_plan(cfg_or_plan: RunConfig | Plan, computed: Plan | None = None, **options) -> str:
    """The plan as a text table with its assumptions and warnings. Takes a RunConfig (then ``options`` go to
    ``plan``: gpu, mfu, rounding, corpus_tokens, n_gpus, ...; or ``computed``, its plan made already) or a Plan."""
    p = computed or (cfg_or_plan if isinstance(cfg_or_plan, Plan) else plan(cfg_or_plan, **options))
    a = p.assumptions
    rounding = ("exact: steps = ceil(tokens / tokens_per_step)" if a["rounding"] == "exact" else
                f"authors': a step counted as {a['step_tokens_counted']:,} tokens, so a run sees "
                f"steps x {a['tokens_per_step']:,} tokens")
    supply = ", ".join(f"{k} {fmt_tokens(v) if v else '?'}" for k, v in a["data_supply"].items())
    lines = [format_regime(cfg_or_plan), ""] if isinstance(cfg_or_plan, RunConfig) else []
    lines += [
        f"pvs plan, tier {a['tier']}: {a['batch_size']} x {a['seq_len']} = {a['tokens_per_step']:,} tokens per step",
        f"token -> step rounding: {rounding}",
        f"GPU-hours on {a['gpu']} at {a['peak_flops'] / 1e12:g} TFLOP/s bf16 dense peak x assumed MFU "
        f"{a['mfu']:.0%}",
        f"FLOPs: {a['flops']}",
        f"data per split: {supply} ({a['data_supply_source']})",
        "",
    ]
    head = ("run", "shape", "params", "steps", "tokens", "FLOPs", "GPU-h", "epochs", "experiments / note")
    table = [head]
    for r in p.rows:
        exps = ",".join(e.replace("equal_tokens", "eq").replace("token_scaling", "scal").replace("ratio_sweep", "sweep")
                        for e in r["experiments"])
        table.append((r["run"], r["shape"], fmt_tokens(r["params"]), f"{r['steps']:,}" if r["steps"] else "-",
                      fmt_tokens(r["tokens"]) if r["tokens"] else "-", f"{r['flops']:.3g}" if r["flops"] else "0",
                      _fmt_hours(r["gpu_hours"]), f"{r['epochs']:.2f}" if r["epochs"] is not None else "-",
                      "; ".join(x for x in (exps, r["note"]) if x)))
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    t = p.totals
    gpus = f"{t['n_gpus']} GPU{'s' if t['n_gpus'] > 1 else ''}"
    lines += ["", f"total: {t['runs']} runs, {t['flops']:.3g} FLOPs, {_fmt_hours(t['gpu_hours'])} GPU-hours "
                  f"(~{t['days_on_n_gpus']:,.0f} days on {gpus} at that MFU)"]
    if isinstance(cfg_or_plan, RunConfig):
        variants = list(dict.fromkeys(r["variant"] for r in p.rows if r["stage"] == "prune"))
        lines += ["", "pruning settings (authors' scripts vs this tier):"]
        for m in method_settings(cfg_or_plan, variants):
            lines.append(f"  {m['method']:15s} {m['granularity']:6s} authors: {m['authors']}"
                         + (f" [{m['script']}]" if m["script"] else ""))
            lines.append(f"  {'':15s} {'':6s} pvs:     {m['pvs']}; scorer: {m['scorer']}")
    lines += [f"warning: {w}" for w in p.warnings]
    return "\n".join(lines)
