"""Named scales of the whole study: the same experiments from a test-sized run to the paper's budgets.

    smoke  tests and CI: a 4-layer parent on a slice of the offline corpus; seconds per run
    cpu    the default `bash reproduce.sh` on a 2-core machine (51 min from a fresh clone here; README)
    gpu    one GPU for hours (an H200-class card); still offline by default
    paper  the paper itself: Llama-3.1-8B shapes, DCLM, 512 x 8192-token batches, P=200B, N=50B

Every tier keeps the paper's budget proportion P:N = 200:50.

    cfg = get("cpu")            # a RunConfig; override with pvs.config.apply_overrides
"""
from __future__ import annotations

import dataclasses

from pvs.config import BudgetConfig, DataConfig, EvalConfig, RunConfig, StudyConfig, TrainConfig
from pvs.errors import PvsError
from pvs.shape import RELEASED_SHAPES, ModelShape


def _smoke() -> RunConfig:
    return RunConfig(
        tier="smoke",
        parent=ModelShape(n_layers=4, hidden=64, n_heads=8, n_kv_heads=2, head_dim=8, ffn=192, vocab=512,
                          max_seq=1024),
        data=DataConfig(max_docs=600, vocab_size=512),
        train=TrainConfig(seq_len=64, batch_size=8, lr=3e-3, checkpoint_every=20, log_every=5),
        eval=EvalConfig(seq_len=64, max_tokens=4096, batch_size=16),
        budget=BudgetConfig(pretrain_tokens=40_960, retrain_tokens=10_240),
        # every granularity once, every experiment once, as small as it gets
        study=StudyConfig(methods=["minitron-depth", "minitron-width", "sparsegpt", "sparsegpt-2:4"],
                          scaling_methods=["minitron-depth", "minitron-width"], scaling_fracs=[0.05, 0.25, 1.25],
                          sweep_methods=["minitron-depth"], sweep_ratios=[0.5, 0.7], headline_seeds=[0, 1],
                          calib_samples=8, calib_seq_len=64, downstream_limit=4,
                          downstream_experiments=["equal_tokens"]),
    )


def _cpu() -> RunConfig:
    # The paper's regime in miniature (pvs.regime prints it beside the paper's): the parent sees 21.5
    # tokens per non-embedding parameter (paper ~29), P:N = 4:1, budgets are the paper's fractions of P,
    # ratios 0.5-0.8 give four distinct shapes (10 layers), the paper's recipe. The size follows from a
    # pilot on this 2-core machine (README): a 92k-parameter parent on P = 2M tokens beats the bigram fitted
    # on the same tokens; the whole default grid (3 seeds for every arm of a claim) takes 51 min from a fresh
    # clone on the current 2-core machine (README; the first machine of this kind trained ~2x faster).
    # A 2,048-token vocabulary keeps the embedding, which does not shrink with the model, from dominating.
    # Sequences of 64 tokens give attention the paper's share of a training step's FLOPs (0.21 here, 0.22
    # for Llama-3.1-8B at 8,192; pvs.regime): at 256 it was 0.51, and on 2 cores attention (head dim 8)
    # took 61% of a step (bench_seeds.py); at 64 a step of the same 2,048 tokens is ~1.5x faster (README).
    return RunConfig(
        tier="cpu",
        parent=ModelShape(n_layers=10, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64, vocab=2048,
                          max_seq=2048),
        data=DataConfig(vocab_size=2048),
        train=TrainConfig(seq_len=64, batch_size=32, lr=6e-3, checkpoint_every=200, log_every=10, threads=2),
        eval=EvalConfig(seq_len=64, max_tokens=8192, batch_size=64),
        budget=BudgetConfig(pretrain_tokens=2_000_000, retrain_tokens=500_000),
        # The Figure-1 methods (depth and width on the left; depth, Sheared LLaMA, SparseGPT 2:4 and
        # unstructured on the right), four budgets, four ratios, three seeds for every arm; the downstream
        # tasks are left out (at chance at this size); configs/full_grid.yaml (reproduce.sh --full) adds
        # every method, the 2.5P budget and S_{P+N} along the sweep.
        study=StudyConfig(methods=["minitron-depth", "minitron-width", "sheared-llama", "sparsegpt-2:4",
                                   "sparsegpt"],
                          scaling_methods=["minitron-depth", "minitron-width"],
                          scaling_fracs=[0.05, 0.15, 0.25, 1.25],
                          sweep_methods=["minitron-depth", "minitron-width"], sweep_ratios=[0.5, 0.6, 0.7, 0.8],
                          sweep_equal_total=False, seeds=[0, 1, 2], headline_seeds=[0, 1, 2],
                          calib_samples=256, calib_seq_len=64, downstream_tasks=[], downstream_limit=0,
                          workers=2),
    )


def _gpu() -> RunConfig:
    # The parent has SmolLM2-135M's exact shape and tokenizer, so experiment released_parent can compare
    # pruning our own pretrained parent with pruning the released SmolLM2-135M (paper: custom P200 vs
    # released Llama-3.1-8B). In the paper's regime: 106M non-embedding parameters on P = 2.8B tokens
    # (26 per parameter; paper 29), N = P/4, streamed from DCLM-Baseline. That needs a network: offline it
    # stops with a one-line error naming the tokens it lacks (the offline mix has ~11M with this tokenizer
    # and would repeat ~300 times).
    return RunConfig(
        tier="gpu",
        parent=dataclasses.replace(RELEASED_SHAPES["smollm2-135m"]),
        data=DataConfig(source="dclm", tokenizer="smollm2-135m", vocab_size=49152, retrain_frac=0.25,
                        calib_frac=0.002, valid_frac=0.002),
        train=TrainConfig(seq_len=1024, batch_size=64, lr=1e-3, checkpoint_every=500, log_every=20),
        eval=EvalConfig(seq_len=1024, max_tokens=262_144, batch_size=32),
        budget=BudgetConfig(pretrain_tokens=2_800_000_000, retrain_tokens=700_000_000),
        study=StudyConfig(released_parent="smollm2-135m", downstream_limit=500, calib_samples=128,
                          calib_seq_len=1024, workers=1, shape_table="smollm2-135m"),
    )


def _paper() -> RunConfig:
    # Llama-3.1-8B trained by the authors on DCLM-Baseline with MaxText (their training scripts in
    # zlab-princeton/llm-pruning-collection: 512 x 8192-token steps, AdamW, cosine to 10%).
    return RunConfig(
        tier="paper",
        parent=ModelShape(n_layers=32, hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128, ffn=14336,
                          vocab=128256, tied=False, rope_theta=500_000.0, max_seq=8192),
        # the authors retrain on DCLM shards 50-63 of 64 (~22%); pretrain on the rest
        data=DataConfig(source="dclm", tokenizer="meta-llama/Llama-3.1-8B", vocab_size=128256,
                        retrain_frac=0.2, calib_frac=0.001, valid_frac=0.001),
        train=TrainConfig(seq_len=8192, batch_size=512, micro_batch_size=1, lr=3e-4, checkpoint_every=1000,
                          log_every=10),
        eval=EvalConfig(seq_len=8192, max_tokens=8192 * 256, batch_size=1),
        budget=BudgetConfig(pretrain_tokens=200_000_000_000, retrain_tokens=50_000_000_000),
        study=StudyConfig(calibration="authors", shape_table="llama3.1-8b"),
    )


TIERS = {"smoke": _smoke, "cpu": _cpu, "gpu": _gpu, "paper": _paper}


def get(name: str) -> RunConfig:
    """The RunConfig of tier ``name``."""
    if name not in TIERS:
        raise PvsError(f"unknown tier {name!r}; known tiers: {', '.join(TIERS)}")
    return TIERS[name]()
