"""The shape of a Llama-family decoder, and the sizes that follow from it alone (torch-free).

``ModelShape`` names every dimension of a Llama-3.1-style decoder (GQA, SwiGLU, RMSNorm, RoPE);
``shape_param_counts`` and ``flops_per_token`` give the sizes the study compares; ``RELEASED_SHAPES``
holds the released parents whose shapes pvs knows without loading them. pvs.model builds models from a
shape; configs, plans and reports read shapes without importing torch.

    shape = ModelShape(n_layers=8, hidden=128, n_heads=8, n_kv_heads=2, head_dim=16, ffn=384, vocab=4096)
    shape_param_counts(shape)["non_embedding"]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pvs.errors import check


@dataclass
class ModelShape:
    """Dimensions of a Llama decoder. Defaults are a tiny Llama-3.1-like model (4 query heads per KV head)."""

    n_layers: int = 8
    """Number of decoder layers (Llama-3.1-8B: 32)."""
    hidden: int = 128
    """Residual stream width d_model (Llama-3.1-8B: 4096)."""
    n_heads: int = 8
    """Query heads per layer (Llama-3.1-8B: 32)."""
    n_kv_heads: int = 2
    """Key/value heads per layer; n_heads must be a multiple (GQA; Llama-3.1-8B: 8)."""
    head_dim: int = 16
    """Width of one attention head. 0 derives hidden // n_heads; set it explicitly once width
    pruning makes hidden differ from n_heads * head_dim (Llama-3.1-8B: 128)."""
    ffn: int = 384
    """SwiGLU intermediate size (Llama-3.1-8B: 14336)."""
    vocab: int = 4096
    """Vocabulary size (Llama-3: 128256)."""
    tied: bool = False
    """Share the input embedding and the output head (Llama-3.1-8B: untied; SmolLM2: tied)."""
    rope_theta: float = 500_000.0
    """RoPE base frequency (Llama-3.1: 500000)."""
    max_seq: int = 8192
    """Longest sequence the position encoding is configured for."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon (Llama-3.1: 1e-5)."""

    def validate(self) -> None:
        for name in ("n_layers", "hidden", "n_heads", "n_kv_heads", "ffn", "vocab", "max_seq"):
            v = getattr(self, name)
            check(isinstance(v, int) and v > 0, f"model.{name}={v!r} must be a positive integer")
        check(self.head_dim >= 0, f"model.head_dim={self.head_dim} must be >= 0 (0 = hidden // n_heads)")
        check(self.n_heads % self.n_kv_heads == 0,
              f"model.n_heads={self.n_heads} is not divisible by model.n_kv_heads={self.n_kv_heads}; "
              f"allowed: n_kv_heads dividing n_heads (e.g. {_divisors(self.n_heads)})")
        # transformers' LlamaConfig requires hidden % n_heads == 0 even with an explicit head_dim;
        # with head_dim=0 the head width is derived from it, so hidden must equal n_heads x head_dim
        check(self.hidden % self.n_heads == 0,
              f"model.hidden={self.hidden} is not a multiple of n_heads={self.n_heads} "
              f"(n_heads x head_dim{'' if self.head_dim else ' = hidden'} is required by Llama configs); "
              f"allowed: hidden in {[self.n_heads * k for k in range(max(1, self.hidden // self.n_heads - 1), self.hidden // self.n_heads + 3)]}")

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.hidden // self.n_heads


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def shape_param_counts(shape: ModelShape) -> dict[str, int]:
    """Parameter counts from the shape alone: total and non-embedding (everything but the
    input embedding and the output head)."""
    d, hd = shape.hidden, shape.attn_head_dim
    attn = d * hd * (2 * shape.n_heads + 2 * shape.n_kv_heads)  # q, o and k, v
    mlp = 3 * d * shape.ffn
    per_layer = attn + mlp + 2 * d  # two RMSNorms
    non_emb = shape.n_layers * per_layer + d  # final norm
    emb = shape.vocab * d * (1 if shape.tied else 2)
    return {"total": non_emb + emb, "non_embedding": non_emb}


def flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM's convention: 6 * N + 12 * L * H * Q * T,
    where N counts every matmul weight including the output head (not the embedding lookup)."""
    counts = shape_param_counts(shape)
    n_matmul = counts["non_embedding"] + shape.vocab * shape.hidden
    attn = 12 * shape.n_layers * shape.n_heads * shape.attn_head_dim * seq_len
    return 6.0 * n_matmul + attn


def replace(shape: ModelShape, **changes) -> ModelShape:
    """A validated copy of ``shape`` with ``changes``."""
    new = dataclasses.replace(shape, **changes)
    new.validate()
    return new


RELEASED_SHAPES = {
    "smollm2-135m": ModelShape(n_layers=30, hidden=576, n_heads=9, n_kv_heads=3, head_dim=64, ffn=1536,
                               vocab=49152, tied=True, rope_theta=100_000.0, max_seq=8192),
    "meta-llama/Llama-3.1-8B": ModelShape(n_layers=32, hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128,
                                          ffn=14336, vocab=128256, tied=False, max_seq=8192),
}
"""Shapes of the released parents pvs knows without loading them (from their published configs)."""
