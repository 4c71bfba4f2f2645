"""The paper's experiments as grids of cached runs ("arms"), and their metrics as table rows.

An arm is one trained model: a pruned parent retrained on N tokens (P-R_N, the retrain split) or
the same architecture from random init (S_N or S_{P+N}, the pretrain split, as the paper's
scratch runs read the pretraining data). Sparse scratch arms keep the pruned mask and redraw the
surviving weights (pvs.prune.masks.reinit_with_masks, by default the authors' scheme, which keeps the
parent's embeddings and norms; study.sparse_scratch_init='fresh' redraws them too). Every directory is named by a hash of
everything it depends on, so scratch arms of methods that reach the same architecture are
shared, a rerun skips finished arms, and a changed setting re-runs only what depends on it.

    rows = run_experiment("equal_tokens", cfg)        # also writes figures/<tier>/metrics/equal_tokens.json
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path

import torch

from pvs.config import RunConfig, config_hash, from_dict, to_dict
from pvs.errors import PvsError, check
from pvs.experiments import EXPERIMENTS, Arm, check_experiment, experiment_arms  # noqa: F401 (re-exported)
from pvs.paths import figures_root, runs_root
from pvs.records import atomic_write_json, code_version, environment, read_json
from pvs import stages
from pvs.train import keep_freed_memory

def config_for(tier: str, config: dict | None = None) -> RunConfig:
    """The config an experiment notebook runs: the resolved one `pvs study` passes as a dict (checked field
    by field), or, opened by hand with ``config = None``, the tier's defaults."""
    from pvs import tiers
    if config is None:
        return tiers.get(tier)
    cfg = from_dict(RunConfig, config)
    check(cfg.tier == tier, f"notebook parameters disagree: tier={tier!r} but config is tier {cfg.tier!r}")
    return cfg


def metrics_dir_for(tier: str) -> Path:
    """Where a tier's metrics records live: figures/<tier>/metrics (or $PVS_FIGURES/<tier>/metrics)."""
    return figures_root() / tier / "metrics"


def metrics_dir(cfg: RunConfig) -> Path:
    return metrics_dir_for(cfg.tier)


# ------------------------------------------------------------------ pruning


def calib_tokens(cfg: RunConfig, data: stages.DataHandle, variant: str | None = None) -> torch.Tensor:
    """Calibration windows from the calib split (seeded): the method's own size under study.calibration =
    'authors' (pvs.prune.registry.MethodSpec.calibration), else study.calib_samples x study.calib_seq_len."""
    from pvs.tokens import TokenStream
    samples, seq_len = _spec(variant).calibration(cfg) if variant else (cfg.study.calib_samples,
                                                                         cfg.study.calib_seq_len)
    x, _ = TokenStream(data.shards["calib"]).batch(0, samples, seq_len, seed=cfg.data.split_seed)
    return x


def _spec(variant: str):
    from pvs.prune.registry import get_method, parse_variant
    return get_method(parse_variant(variant)[0])


def check_parent_exists(cfg: RunConfig) -> None:
    """The tier's own parent must be trained before anything prunes it (checked before data is built)."""
    if not cfg.study.parent:
        path = stages.parent_dir(cfg) / "model"
        check(path.is_dir(), f"the parent {str(path)!r} is not trained yet; run `pvs pretrain --tier {cfg.tier}`")


def load_parent_model(cfg: RunConfig, data: stages.DataHandle):
    from pvs.checkpoint import load_model
    if cfg.study.parent:
        from pvs.parents import load_parent
        return load_parent(cfg.study.parent)[0]
    check_parent_exists(cfg)
    return load_model(stages.parent_dir(cfg) / "model", "the parent")


def parent_tokenizer(cfg: RunConfig, data: stages.DataHandle):
    """The tokenizer of the parent being pruned (saved beside every model made from it)."""
    if cfg.study.parent:
        from pvs.parents import load_parent
        return load_parent(cfg.study.parent)[1]
    return data.tokenizer


def pruned_dir(cfg: RunConfig, variant: str, ratio: float) -> Path:
    parent = cfg.study.parent or stages.parent_dir(cfg).name
    samples, seq_len = _spec(variant).calibration(cfg)
    key = {"parent": parent, "variant": variant, "ratio": ratio, "calib": [samples, seq_len, cfg.data.split_seed],
           "options": prune_options(cfg, variant, ratio)}
    return runs_root() / cfg.tier / "pruned" / f"{variant.replace(':', '')}-r{ratio}-{config_hash(key)}"


def prune_options(cfg: RunConfig, variant: str, ratio: float) -> dict:
    """Method options the study passes (part of the pruned run's key): those the method's registry entry
    derives from the config, then the user's study.method_options for that method."""
    spec = _spec(variant)
    derived = spec.study_options(cfg, ratio) if spec.study_options else {}
    return {**derived, **cfg.study.method_options.get(spec.name, {})}


def prune(cfg: RunConfig, data: stages.DataHandle, variant: str, ratio: float, out: Path | None = None) -> Path:
    """The pruned model of ``variant`` at ``ratio`` (made once; see pvs.prune.run), in the study's run folder
    or in ``out`` (`pvs prune --out`): the same options, calibration data and budget either way."""
    from pvs.prune.registry import BudgetTooSmall
    from pvs.prune.run import check_cached, prune_to_dir
    spec, out = _spec(variant), Path(out) if out else pruned_dir(cfg, variant, ratio)
    from pvs.downstream import with_task_scorer  # task=NAME, num_fewshot=K -> task_score (minitron-depth)
    tokenizer = functools.cache(lambda: parent_tokenizer(cfg, data))  # a released parent's loads its model
    options = with_task_scorer(spec.name, prune_options(cfg, variant, ratio), tokenizer)
    if (out / "prune.json").is_file():  # reused only when complete and what was asked
        check_cached(read_json(out / "prune.json"), out, variant, ratio, options)
        return out
    if spec.trains:  # pruning trains (mask learning) on its own slice of the retrain split
        from pvs.tokens import TokenStream
        stream, b, t = TokenStream(data.shards["retrain"]), options["batch_size"], spec.calibration(cfg)[1]
        options = {**options, "data": (stream.batch(s, b, t, seed=10_000 + cfg.train.seed)[0]
                                       for s in range(options["steps"]))}
    try:
        prune_to_dir(load_parent_model(cfg, data), variant, ratio, calib_tokens(cfg, data, variant), out, options,
                     provenance={"parent": cfg.study.parent or stages.parent_dir(cfg).name}, tokenizer=tokenizer())
    except BudgetTooSmall as e:  # name the study's budget settings, not the method's arguments
        raise PvsError(e.message(spec.budget_hint(cfg))) from None
    return out


# ------------------------------------------------------------------ training arms


def _init_model(cfg: RunConfig, arm: Arm, pruned: Path):
    """(model, masks, split) an arm starts from."""
    from pvs.checkpoint import load_model
    from pvs.prune.masks import load_masks, reinit_with_masks
    model = load_model(pruned / "model", "pruned model")
    masks = load_masks(pruned / "model")
    sparse = read_json(pruned / "prune.json")["granularity"] == "sparse"
    check(bool(masks) == sparse, f"{str(pruned)!r} is a {'sparse' if sparse else 'dense'} pruned model but its "
                                 f"mask file is {'missing' if sparse else 'present'}; delete {str(pruned)!r} and "
                                 f"rerun pruning")
    if arm.init == "pruned":
        return model, masks, "retrain"
    if masks:  # sparse scratch: the pruned mask, redrawn weights (study.sparse_scratch_init says which)
        return reinit_with_masks(model, masks, seed=arm.seed, scheme=cfg.study.sparse_scratch_init), masks, "pretrain"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arm.seed)
        fresh = type(model)(model.config)
    return fresh.float(), None, "pretrain"


def arm_dir(cfg: RunConfig, arm: Arm) -> Path:
    pruned = pruned_dir(cfg, arm.variant, arm.ratio)
    train_cfg = stages.train_key(replace(cfg.train, seed=arm.seed))
    if arm.init == "pruned":
        key = {"pruned": pruned.name, "tokens": arm.tokens, "train": train_cfg}
        name = f"{pruned.name.rsplit('-', 1)[0]}-R{arm.tokens}-s{arm.seed}"
    else:  # keyed by the architecture (and mask), not the method, so equal shapes share a run
        rec = read_json(pruned / "prune.json")
        arch = {"config": rec["config"], "masks": rec["variant"] if rec["granularity"] == "sparse" else None}
        if arch["masks"]:  # a sparse scratch arm is its mask and how its weights were drawn
            arch["masks"] = pruned.name
            arch["init"] = cfg.study.sparse_scratch_init
        key = {"arch": arch, "tokens": arm.tokens, "train": train_cfg, "data": to_dict(cfg.data)}
        name = f"scratch-{config_hash(arch, 8)}-S{arm.tokens}-s{arm.seed}"
    return runs_root() / cfg.tier / "arms" / f"{name}-{config_hash(key, 8)}"


def run_arm(cfg: RunConfig, arm: Arm) -> Path:
    """Train and evaluate one arm (each step cached)."""
    from pvs.checkpoint import load_tokenizer
    from pvs.tokens import TokenStream
    from pvs.train import train
    data = stages.prepare_data(cfg)
    pruned = prune(cfg, data, arm.variant, arm.ratio)
    out = arm_dir(cfg, arm)
    if not (out / "train.json").is_file():
        model, masks, split = _init_model(cfg, arm, pruned)
        train(model, TokenStream(data.shards[split]), replace(cfg.train, seed=arm.seed), arm.tokens, out,
              masks=masks, desc=f"{arm.init} {arm.variant} r{arm.ratio} {arm.budget}",
              extra_record={"arm": asdict(arm), "pruned_from": pruned.name, "split": split},
              tokenizer=load_tokenizer(pruned / "model") or parent_tokenizer(cfg, data))
    evaluate_run(cfg, data, out)
    return out


def evaluate_run(cfg: RunConfig, data: stages.DataHandle, run: Path) -> None:
    """Held-out loss/perplexity and, if the tier asks, the downstream tasks (both cached)."""
    stages.evaluate(cfg, run, data)
    if cfg.study.downstream_limit >= 0 and cfg.study.downstream_tasks and not (run / "downstream.json").is_file():
        from pvs.downstream import evaluate_downstream
        evaluate_downstream(str(run / "model"), data.tokenizer, tasks=cfg.study.downstream_tasks,
                            limit=cfg.study.downstream_limit or None, lambada=False,
                            out_path=run / "downstream.json")


def _worker(cfg_dict: dict, arm_dict: dict) -> str:
    cfg = from_dict(RunConfig, cfg_dict)
    # the cores are shared among the workers (2 threads per process on a busy machine run 2x slower than 1)
    threads = max(1, (os.cpu_count() or 1) // cfg.study.workers)
    cfg = replace(cfg, train=replace(cfg.train, threads=threads))
    torch.set_num_threads(threads)
    return str(run_arm(cfg, Arm(**arm_dict)))


def run_arms(cfg: RunConfig, arms: list[Arm]) -> list[Path]:
    """Run arms (pruning first, serially; then training in ``study.workers`` processes)."""
    data = stages.prepare_data(cfg)
    for variant, ratio in dict.fromkeys((a.variant, a.ratio) for a in arms):
        prune(cfg, data, variant, ratio)
    # arms that are the same run (scratch arms of methods reaching one architecture) run once
    unique = list({arm_dir(cfg, a): a for a in reversed(arms)}.items())[::-1]
    if cfg.study.workers <= 1:
        done = {d: run_arm(cfg, a) for d, a in unique}
    else:
        with ProcessPoolExecutor(cfg.study.workers, mp_context=get_context("spawn")) as pool:
            futures = {d: pool.submit(_worker, to_dict(cfg), asdict(a)) for d, a in unique}
            done = {d: Path(f.result()) for d, f in futures.items()}
    return [done[arm_dir(cfg, a)] for a in arms]


# ------------------------------------------------------------------ experiments


def row(cfg: RunConfig, arm: Arm | None, run: Path, data: stages.DataHandle | None = None) -> dict:
    """One flat table row of a finished run, with the provenance of its numbers. ``val_loss`` is the
    token-weighted mean over every held-out source (pvs.perplexity); ``val_blocks`` holds the same
    text in blocks, in the same order in every row, for the statistics' text bootstrap."""
    data = data or stages.prepare_data(cfg)
    tr, ev = read_json(run / "train.json"), stages.evaluate(cfg, run, data)
    ds = read_json(run / "downstream.json") if (run / "downstream.json").is_file() else None
    out = {
        "arm": "parent" if arm is None else ("P-R" if arm.init == "pruned" else "S"),
        "budget": None if arm is None else arm.budget, "variant": None if arm is None else arm.variant,
        "ratio": 0.0 if arm is None else arm.ratio, "seed": cfg.train.seed if arm is None else arm.seed,
        "train_tokens": tr["tokens"], "val_loss": ev["val_loss"], "val_tokens": ev["val_tokens"],
        "val_loss_by_source": ev["loss"], "ppl": ev["ppl"],
        "val_blocks": {k: ev["val_blocks"][k] for k in ("tokens", "loss_sum")},
        "run": str(run.relative_to(runs_root())) if run.is_relative_to(runs_root()) else str(run),
        "code": tr.get("code", {}).get("commit"), "data_sha256": tr["data"]["sha256"],
    }
    if arm is not None:
        pr = read_json(pruned_dir(cfg, arm.variant, arm.ratio) / "prune.json")
        # a pruned arm's total: the parent's P, the tokens pruning itself trained on (mask learning), then N
        learned = pr.get("info", {}).get("mask_learning_tokens", 0) if arm.init == "pruned" else 0
        out.update(granularity=_spec(arm.variant).granularity, achieved_ratio=pr["achieved_ratio"],
                   params=pr["params"], mask_learning_tokens=learned,
                   total_tokens=tr["tokens"] + (cfg.budget.pretrain_tokens + learned if arm.init == "pruned" else 0))
    else:
        out.update(granularity=None, total_tokens=tr["tokens"],
                   baselines={k: v for k, v in stages.baselines(cfg, data).items() if k in ("unigram", "bigram")})
    if ds:
        out["downstream"] = {t: {"value": e["value"], "stderr": e["stderr"], "n": e["n_evaluated"],
                                 "n_total": e["n_total"], "metric": e["metric"]} for t, e in ds["tasks"].items()}
        out["downstream_avg"] = ds["average"].get("value")
        out["downstream_avg_stderr"] = ds["average"].get("stderr")
    return out


def run_experiment(name: str, cfg: RunConfig, out_dir: Path | None = None) -> list[dict]:
    """Run every arm of experiment ``name``; write its metrics record; return the rows."""
    check_experiment(name)
    if name not in cfg.study.downstream_experiments:  # this experiment's runs are not scored downstream
        cfg = replace(cfg, study=replace(cfg.study, downstream_tasks=[]))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if not torch.cuda.is_available():
        keep_freed_memory()  # pruning and evaluation here make large temporaries too
    data = stages.prepare_data(cfg)
    record = {"experiment": name, "tier": cfg.tier, "config": to_dict(cfg), "config_hash": config_hash(cfg),
              "code": code_version(), "environment": environment(), "pretrain_tokens": cfg.budget.pretrain_tokens,
              "retrain_tokens": cfg.budget.retrain_tokens, "rows": []}
    if name == "released_parent" and not cfg.study.released_parent:
        record["skipped"] = (f"tier {cfg.tier} sets no study.released_parent: retraining SmolLM2-135M is GPU "
                             f"work here; run `bash reproduce.sh --tier gpu`")
    elif name == "released_parent":
        # the same pruning and retraining from our pretrained parent and from the released one; the scratch
        # arms are shared (same architecture), so the two pruned inits are compared on equal footing
        s = cfg.study
        ours, released = (replace(cfg, study=replace(s, parent=p)) for p in ("", s.released_parent))
        for c, source in ((ours, "custom"), (released, "released")):
            parent = stages.pretrain(c, data) if source == "custom" else None
            if parent is not None:
                evaluate_run(c, data, parent)
                record["rows"].append({**row(c, None, parent, data), "parent": source})
            arms = [Arm("pruned", v, s.ratio, cfg.budget.retrain_tokens, "N", seed)
                    for v in s.scaling_methods for seed in s.seeds]
            if source == "custom":
                arms += [Arm("scratch", a.variant, a.ratio, a.tokens, "N", a.seed) for a in arms]
            for arm, run in zip(arms, run_arms(c, arms)):
                record["rows"].append({**row(c, arm, run, data), "parent": source})
    else:
        parent = None if cfg.study.parent else stages.pretrain(cfg, data)
        if parent is not None:
            evaluate_run(cfg, data, parent)
            record["rows"].append(row(cfg, None, parent, data))
        arms = experiment_arms(name, cfg)
        for arm, run in zip(arms, run_arms(cfg, arms)):
            record["rows"].append(row(cfg, arm, run, data))
    atomic_write_json(Path(out_dir or metrics_dir(cfg)) / f"{name}.json", record)
    return record["rows"]


def describe(name: str, cfg: RunConfig) -> None:
    """Print the arms an experiment will run (before running them)."""
    arms = experiment_arms(name, cfg)
    print(f"experiment {name}: {len(arms)} training arms at tier {cfg.tier} "
          f"(P = {cfg.budget.pretrain_tokens:,} tokens, N = {cfg.budget.retrain_tokens:,} tokens)")
    for a in arms:
        print(f"  {a.init:8s} {a.variant:16s} ratio {a.ratio:<4} {a.budget:>6s} {a.tokens:>12,} tokens  seed {a.seed}")


def table(rows: list[dict]):
    """The rows as a DataFrame (one line per run) for display."""
    import pandas as pd
    flat = []
    for r in rows:
        f = {k: r.get(k) for k in ("arm", "budget", "variant", "granularity", "ratio", "seed", "train_tokens",
                                   "total_tokens", "val_loss")}
        f.update({f"ppl_{k}": v for k, v in r["ppl"].items()})
        if r.get("downstream_avg") is not None:
            f["avg_acc"] = r["downstream_avg"]
        flat.append(f)
    return pd.DataFrame(flat)


def gaps(rows: list[dict]):
    """Validation-loss gaps per (variant, ratio): S_N - P-R_N (equal training tokens, positive = pruning
    helps) and S_{P+N} - P-R_N (equal total tokens), averaged over seeds."""
    import pandas as pd
    df = table(rows)
    if df.empty:
        return df
    df = df[df.arm != "parent"]
    if df.empty:
        return df
    mean = df.groupby(["variant", "ratio", "arm", "budget"], dropna=False).val_loss.mean()
    out = []
    for (variant, ratio), g in mean.groupby(level=[0, 1]):
        g = g.droplevel([0, 1])
        for budget in sorted({b for _, b in g.index if b != "P+N"}):
            if ("P-R", budget) in g and ("S", budget) in g:
                line = {"variant": variant, "ratio": ratio, "budget": budget,
                        "loss_pruned": g[("P-R", budget)], "loss_scratch": g[("S", budget)],
                        "gap_equal_training_tokens": g[("S", budget)] - g[("P-R", budget)]}
                if budget == "N" and ("S", "P+N") in g:
                    line["loss_scratch_total"] = g[("S", "P+N")]
                    line["gap_equal_total_tokens"] = g[("S", "P+N")] - g[("P-R", budget)]
                out.append(line)
    return pd.DataFrame(out)
