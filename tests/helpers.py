"""Shared test fixtures: tiny models and token streams that need no corpus, and a reference for the claim
statistics written out by hand."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pvs.model import ModelShape

# a smoke-tier study small enough that pruning and training take a second or two (pvs CLI arguments)
SMOKE = ["--tier", "smoke", "--set", "budget.pretrain_tokens=2560", "--set", "budget.retrain_tokens=1024",
         "--set", "train.threads=1"]

TINY = ModelShape(n_layers=2, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64, vocab=97, max_seq=256)


def scaled_parent(shape: ModelShape, seed: int = 0, scale: float = 4.0):
    """A tiny parent in eval mode whose linear weights are scaled up, so that every layer visibly changes the
    residual stream (at the init's 0.02 the blocks are near-identities and pruning choices would not show)."""
    import torch
    from pvs.model import build_model
    model = build_model(shape, seed).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(scale)
    return model


def synthetic_stream(path: Path, n_tokens: int = 6000, vocab: int = 97, seed: int = 0) -> Path:
    """A token shard with learnable structure (a noisy repeating pattern), written like pvs.tokens does."""
    rng = np.random.default_rng(seed)
    base = np.arange(n_tokens) * 7 % vocab
    noise = rng.integers(0, vocab, n_tokens)
    ids = np.where(rng.random(n_tokens) < 0.2, noise, base).astype(np.uint16)
    path = Path(path)
    path.write_bytes(ids.tobytes())
    path.with_suffix(".json").write_text(json.dumps({"tokens": int(ids.size), "dtype": "uint16", "sha256": "x"}))
    return path


def hand_contrast(terms: list[tuple[float, list[dict]]]) -> tuple[float, float]:
    """(Σ c · mean val_loss, 95% half-width) of a contrast of distinct arms (c, rows of one arm), written out
    for tests as the statistics are defined, not through pvs.stats: each arm's seed variance c² s² / n with
    n - 1 df; where every row has val_blocks of equal size, the evaluation text's variance, that of the mean
    over blocks of the contrast taken block by block (blocks - 1 df); Welch-Satterthwaite df; a t quantile."""
    from scipy import stats
    value = sum(c * float(np.mean([r["val_loss"] for r in arm])) for c, arm in terms)
    parts = [(c * c * float(np.var([r["val_loss"] for r in arm], ddof=1)) / len(arm), len(arm) - 1)
             for c, arm in terms]
    if all("val_blocks" in r for _, arm in terms for r in arm):
        per_block = sum(c * np.mean([np.divide(r["val_blocks"]["loss_sum"], r["val_blocks"]["tokens"])
                                     for r in arm], axis=0) for c, arm in terms)
        parts.append((float(np.var(per_block, ddof=1)) / len(per_block), len(per_block) - 1))
    var = sum(v for v, _ in parts)
    df = var ** 2 / sum(v * v / d for v, d in parts)
    return value, float(stats.t.ppf(0.975, df)) * math.sqrt(var)


def assert_estimate(est, terms: list[tuple[float, list[dict]]]) -> None:
    """An estimate (a claims.json dict or a pvs.stats.Estimate) has the value and 95% interval that
    ``hand_contrast`` computes from the same rows."""
    value, half = hand_contrast(terms)
    got = est["value"] if isinstance(est, dict) else est.value
    lo, hi = est["ci95"] if isinstance(est, dict) else est.as_dict()["ci95"]
    # helpers is not a test module (no assertion rewriting), so each assert names its numbers itself
    assert got == pytest.approx(value, rel=1e-9, abs=1e-12), f"value {got} != hand {value}"
    assert (hi - lo) / 2 == pytest.approx(half, rel=1e-6), f"95% half-width {(hi - lo) / 2} != hand {half}"
    assert (lo + hi) / 2 == pytest.approx(value, abs=1e-9), f"interval [{lo}, {hi}] is not centred on {value}"
