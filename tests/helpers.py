"""Shared test fixtures: tiny models and token streams that need no corpus."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pvs.model import ModelShape

TINY = ModelShape(n_layers=2, hidden=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn=64, vocab=97, max_seq=256)


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
