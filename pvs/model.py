"""Llama-architecture models built from a small shape dataclass.

``ModelShape`` names every dimension of a Llama-3.1-style decoder (GQA, SwiGLU, RMSNorm,
RoPE); ``build_model`` turns it into a stock ``transformers.LlamaForCausalLM``;
``param_counts`` and ``flops_per_token`` give the sizes the study compares.

    shape = ModelShape(n_layers=8, hidden=128, n_heads=8, n_kv_heads=2, head_dim=16, ffn=384, vocab=4096)
    model = build_model(shape, seed=0)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pvs.errors import PvsError, check


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


def llama_config(shape: ModelShape) -> LlamaConfig:
    """The transformers config for ``shape`` (head_dim always explicit: pruned shapes need it)."""
    shape.validate()
    return LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        head_dim=shape.attn_head_dim,
        max_position_embeddings=shape.max_seq,
        rms_norm_eps=shape.norm_eps,
        tie_word_embeddings=shape.tied,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        use_cache=False,
    )


def build_model(shape: ModelShape, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised LlamaForCausalLM (normal(0, 0.02) linears, as transformers and the paper's
    MaxText init), fp32, deterministic in ``seed``."""
    cfg = llama_config(shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model.float()


def is_llama_family(config) -> bool:
    """True for configs whose decoder pvs can prune and train: Llama itself and pvs's per-layer variant."""
    return getattr(config, "model_type", None) in ("llama", "pvs_llama")


def require_llama(config, what: str = "parent") -> None:
    """One-line error unless ``config`` is Llama-family."""
    mt = getattr(config, "model_type", None)
    if not is_llama_family(config):
        raise PvsError(f"{what} has model_type={mt!r}; pvs supports Llama-family models "
                       f"(model_type 'llama', e.g. Llama-3.x, SmolLM2, TinyLlama)")


def shape_of(config) -> ModelShape:
    """The ModelShape of a uniform Llama config (or model)."""
    config = getattr(config, "config", config)
    require_llama(config, "model")
    if getattr(config, "model_type", None) == "pvs_llama":
        raise PvsError("this model has per-layer widths (pvs_llama); it has no single ModelShape")
    rope = getattr(config, "rope_parameters", None) or {}
    return ModelShape(
        n_layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        n_heads=config.num_attention_heads,
        n_kv_heads=config.num_key_value_heads or config.num_attention_heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        ffn=config.intermediate_size,
        vocab=config.vocab_size,
        tied=bool(config.tie_word_embeddings),
        rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
        max_seq=config.max_position_embeddings,
        norm_eps=config.rms_norm_eps,
    )


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


def param_counts(model: torch.nn.Module) -> dict[str, int]:
    """Counts of a built model's unique parameters (tied weights once); sparse models also report
    how many are nonzero."""
    seen, total, emb, nonzero = set(), 0, 0, 0
    emb_ids = set()
    for name in ("get_input_embeddings", "get_output_embeddings"):
        mod = getattr(model, name, lambda: None)()
        if mod is not None:
            emb_ids.add(id(mod.weight))
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(p))
        if id(p) in emb_ids:
            emb += p.numel()
    return {"total": total, "non_embedding": total - emb, "nonzero": nonzero}


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
