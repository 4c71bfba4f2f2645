"""Llama-architecture models built from a shape (pvs.shape, re-exported here).

``build_model`` turns a ``ModelShape`` into a stock ``transformers.LlamaForCausalLM``; ``shape_of``
reads one back from a config; ``param_counts`` counts a built model's parameters (nonzero ones too).

    shape = ModelShape(n_layers=8, hidden=128, n_heads=8, n_kv_heads=2, head_dim=16, ffn=384, vocab=4096)
    model = build_model(shape, seed=0)
"""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pvs.errors import PvsError
from pvs.shape import ModelShape, flops_per_token, replace, shape_param_counts  # noqa: F401  (re-exported)


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


def model_flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """``flops_per_token`` of a built model, read from its modules, so per-layer widths (FLAP) count too:
    6 x (non-embedding parameters + the output head) + 12 x T x the query width summed over layers. Dense
    FLOPs: a sparse model's zeros are counted (no kernel here skips them)."""
    head = model.get_output_embeddings().weight.numel()
    query_width = sum(layer.self_attn.q_proj.out_features for layer in model.model.layers)
    return 6.0 * (param_counts(model)["non_embedding"] + head) + 12.0 * query_width * seq_len
