"""How long a tier's study takes on THIS machine, measured before it starts (`pvs plan --measure`).

The same recipe ran 51 minutes on one 2-core machine and about two hours on another, so a wall time is a
property of the machine, not of the tier. This times a few optimizer steps of every distinct shape the plan
trains (the study's own pvs.train.train_step, on random tokens, after warm-up steps), each with the threads
one worker of the study gets, and prices every run of the plan as its steps x its shape's time per step:

    est = estimate(plan(cfg), cfg)          # seconds per run, per experiment and in all, with the rates measured
    print(format_estimate(est))

The arms' shapes are timed while as many processes train at once as the study runs workers (they share
cores, caches and clock); the parent alone, as it is trained. What it leaves out, and says so: pruning
(seconds per method at small tiers), held-out evaluation (a few seconds per run) and process start-up.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import astuple, replace
from pathlib import Path

import numpy as np

from pvs.config import RunConfig
from pvs.plan import Plan

TIMED_STEPS = 6
WARMUP_STEPS = 2


def seconds_per_step(shape, cfg: RunConfig, threads: int, steps: int = TIMED_STEPS, model=None) -> float:
    """Wall seconds of one optimizer step of a model of ``shape`` under ``cfg.train`` with ``threads`` torch
    threads (the mean of ``steps`` steps after WARMUP_STEPS), on a shard of random tokens. ``model``: time this
    model (e.g. one with another attention kernel) instead of ``build_model(shape, seed=0)``."""
    import torch
    from pvs.model import build_model
    from pvs.tokens import TokenStream, write_random_shard
    from pvs.train import start_session, train_step
    train = replace(cfg.train, threads=threads, checkpoint_every=10**9)
    b, t = train.batch_size, train.seq_len
    with tempfile.TemporaryDirectory(prefix="pvs-walltime-") as tmp:
        shard = write_random_shard(Path(tmp) / "random.bin", (steps + WARMUP_STEPS + 1) * b * (t + 1), shape.vocab)
        model = model if model is not None else build_model(shape, seed=0)
        session = start_session(model, TokenStream(shard), train, tokens=(steps + WARMUP_STEPS) * b * t,
                                out_dir=Path(tmp), desc="walltime")
        for step in range(WARMUP_STEPS):
            train_step(session, step)
        start = time.perf_counter()
        for step in range(WARMUP_STEPS, WARMUP_STEPS + steps):
            loss, _, _ = train_step(session, step)
        float(loss)  # the last step has finished
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps


def _time_shapes(shapes: list, cfg_dict: dict, threads: int) -> list[float]:
    """seconds_per_step of each shape in turn (one worker process of ``_timed_together``)."""
    from pvs.config import from_dict
    import torch
    torch.set_num_threads(threads)
    cfg = from_dict(RunConfig, cfg_dict)
    return [seconds_per_step(s, cfg, threads) for s in shapes]


def _timed_together(shapes: list, cfg: RunConfig, threads: int, workers: int) -> list[float]:
    """Each shape's seconds per step while ``workers`` processes train at once, as the study's workers do
    (cores, caches and clock shared): every process times the same shapes in the same order; the mean."""
    if workers <= 1:
        return [seconds_per_step(s, cfg, threads) for s in shapes]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from pvs.config import to_dict
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_time_shapes, *zip(*[(shapes, to_dict(cfg), threads)] * workers)))
    return [float(np.mean(col)) for col in zip(*results)]


def estimate(p: Plan, cfg: RunConfig, workers: int | None = None) -> dict:
    """Seconds of every training run of plan ``p`` on this machine: the parent alone with cfg.train.threads,
    the arms with the threads one of ``workers`` (default cfg.study.workers) worker processes gets, timed while
    that many processes train at once, as pvs.study runs them."""
    workers = workers or cfg.study.workers
    arm_threads = max(1, (os.cpu_count() or 1) // workers)
    parent_threads = cfg.train.threads or arm_threads
    wanted: dict[tuple, tuple] = {}  # (shape, threads) key -> (shape, threads)
    alone = []  # the parent's key: it trains by itself
    for row in p.rows:
        shape = p.shapes.get(row["run"])
        if shape is not None and row["steps"]:
            threads = parent_threads if row["stage"] == "pretrain" else arm_threads
            key = (astuple(shape), threads)
            wanted.setdefault(key, (shape, threads))
            if row["stage"] == "pretrain":
                alone.append(key)
    together = [k for k in wanted if k not in alone]
    rates = dict(zip(alone, (seconds_per_step(wanted[k][0], cfg, wanted[k][1]) for k in alone)))
    rates.update(zip(together, _timed_together([wanted[k][0] for k in together], cfg, arm_threads, workers)))
    labels = {k: f"{s.n_layers}L d{s.hidden} ffn{s.ffn}, {th} thread(s)" for k, (s, th) in wanted.items()}
    runs = []
    for row in p.rows:
        shape = p.shapes.get(row["run"])
        if shape is None or not row["steps"]:
            continue
        key = (astuple(shape), parent_threads if row["stage"] == "pretrain" else arm_threads)
        runs.append({"run": row["run"], "stage": row["stage"], "experiment": (row["experiments"] or ["-"])[0],
                     "steps": row["steps"], "seconds": row["steps"] * rates[key]})
    parent = sum(r["seconds"] for r in runs if r["stage"] == "pretrain")
    per_experiment: dict[str, float] = {}
    for r in runs:
        if r["stage"] != "pretrain":
            per_experiment[r["experiment"]] = per_experiment.get(r["experiment"], 0.0) + r["seconds"] / workers
    return {"runs": runs, "parent_s": parent, "experiments_s": per_experiment,
            "total_s": parent + sum(per_experiment.values()), "workers": workers, "arm_threads": arm_threads,
            "shapes_timed": len(rates), "steps_timed": TIMED_STEPS,
            "seconds_per_step": {labels[k]: round(v, 4) for k, v in rates.items()}}


def format_estimate(est: dict) -> str:
    mins = lambda s: f"{s / 60:,.1f} min"  # noqa: E731
    lines = [f"wall time on this machine (measured now: {est['shapes_timed']} shapes x {est['steps_timed']} steps, "
             f"arms timed as {est['workers']} workers of {est['arm_threads']} thread(s) training at once):",
             f"  parent pretraining      {mins(est['parent_s'])}"]
    lines += [f"  {name:22s}  {mins(s)}" for name, s in est["experiments_s"].items()]
    lines += [f"  total training          {mins(est['total_s'])} (+ pruning, evaluation ~3 s per run, start-up)"]
    return "\n".join(lines)
