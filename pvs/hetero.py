"""A Llama decoder whose layers may differ in width: the model that FLAP and Sheared LLaMA produce.

Width pruning that decides per layer (FLAP's adaptive structure, Sheared LLaMA's per-layer masks) leaves
layers with different numbers of query heads, KV heads and FFN neurons, which a stock ``LlamaConfig``
cannot describe. ``PvsLlamaConfig`` adds per-layer lists; ``PvsLlamaForCausalLM`` reuses transformers'
Llama modules (forward passes unchanged) and only builds each layer's projections at its own width.
FLAP's bias compensation adds a bias to o_proj / down_proj, so that is a per-layer flag too.

Importing this module registers ``model_type="pvs_llama"`` with ``AutoConfig`` and
``AutoModelForCausalLM``, so a saved hetero model loads back with
``AutoModelForCausalLM.from_pretrained(dir)`` (no ``trust_remote_code``); pvs's loaders
(pvs.checkpoint.load_model) and ``import pvs.prune`` import it. It sits below both training and pruning
(it needs only torch and transformers), and pvs.checkpoint copies this file beside every per-layer-width
checkpoint as its modeling code.

    cfg = PvsLlamaConfig(hidden_size=64, num_hidden_layers=2, head_dim=8, vocab_size=256,
                         layer_num_heads=[8, 4], layer_num_kv_heads=[2, 1], layer_intermediate_size=[128, 96])
    model = PvsLlamaForCausalLM(cfg)

Pruning code does not build these by hand: ``pvs.prune.surgery`` picks the config class (``make_config``).

A layer may keep zero heads (its attention then adds only its o_proj bias, or nothing) or zero FFN
neurons (likewise): FLAP can remove a whole module from a layer.
"""
from __future__ import annotations

import warnings

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.llama.modeling_llama import (LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM,
                                                      LlamaMLP, LlamaModel, LlamaPreTrainedModel, LlamaRMSNorm,
                                                      LlamaRotaryEmbedding)


@strict
class PvsLlamaConfig(LlamaConfig):
    """LlamaConfig plus per-layer widths. The uniform fields (num_attention_heads, num_key_value_heads,
    intermediate_size) hold the widest layer's values, for tools that only read those; ``head_dim`` is
    always explicit and shared by all layers."""

    model_type = "pvs_llama"

    layer_num_heads: list[int] | None = None
    """Query heads of each layer (None: num_attention_heads everywhere)."""
    layer_num_kv_heads: list[int] | None = None
    """KV heads of each layer; each layer's query heads are a multiple of its KV heads (GQA)."""
    layer_intermediate_size: list[int] | None = None
    """SwiGLU neurons of each layer."""
    layer_o_proj_bias: list[bool] | None = None
    """Whether each layer's o_proj has a bias (FLAP bias compensation); None: none has."""
    layer_down_proj_bias: list[bool] | None = None
    """Whether each layer's down_proj has a bias (FLAP bias compensation); None: none has."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        n = self.num_hidden_layers
        if self.layer_num_heads is None:
            self.layer_num_heads = [self.num_attention_heads] * n
        if self.layer_num_kv_heads is None:
            self.layer_num_kv_heads = [self.num_key_value_heads] * n
        if self.layer_intermediate_size is None:
            self.layer_intermediate_size = [self.intermediate_size] * n
        if self.layer_o_proj_bias is None:
            self.layer_o_proj_bias = [bool(self.attention_bias)] * n
        if self.layer_down_proj_bias is None:
            self.layer_down_proj_bias = [bool(self.mlp_bias)] * n

    def validate_architecture(self):
        """Per-layer consistency instead of Llama's hidden % heads rule (head_dim is explicit here)."""
        n = self.num_hidden_layers
        for name in ("layer_num_heads", "layer_num_kv_heads", "layer_intermediate_size", "layer_o_proj_bias",
                     "layer_down_proj_bias"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries; expected num_hidden_layers={n}")
        if self.layer_num_heads is None or self.layer_num_kv_heads is None:
            return
        for i, (h, kv) in enumerate(zip(self.layer_num_heads, self.layer_num_kv_heads)):
            if h < 0 or kv < 0 or (kv == 0) != (h == 0) or (kv and h % kv):
                raise ValueError(f"layer {i}: {h} query heads and {kv} KV heads is not valid GQA "
                                 f"(query heads must be a positive multiple of KV heads, or both 0)")
        if self.layer_intermediate_size is not None and min(self.layer_intermediate_size, default=0) < 0:
            raise ValueError("layer_intermediate_size entries must be >= 0")


def _linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
    """nn.Linear that accepts a zero width quietly (a pruned-away module), instead of warning at init."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(n_in, n_out, bias=bias)


class PvsLlamaAttention(LlamaAttention):
    """LlamaAttention with this layer's own head counts; zero heads means the module emits only its bias."""

    def __init__(self, config: PvsLlamaConfig, layer_idx: int):
        nn.Module.__init__(self)
        self.config = config  # shared: the attention implementation is chosen on it at load time
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.layer_num_heads[layer_idx]
        self.num_key_value_heads = config.layer_num_kv_heads[layer_idx]
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads if self.num_key_value_heads else 1
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        d, hd, qkv_bias = config.hidden_size, self.head_dim, config.attention_bias
        self.q_proj = _linear(d, self.num_heads * hd, qkv_bias)
        self.k_proj = _linear(d, self.num_key_value_heads * hd, qkv_bias)
        self.v_proj = _linear(d, self.num_key_value_heads * hd, qkv_bias)
        self.o_proj = _linear(self.num_heads * hd, d, config.layer_o_proj_bias[layer_idx])

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        if self.num_heads > 0:
            return super().forward(hidden_states, position_embeddings=position_embeddings,
                                   attention_mask=attention_mask, cache=cache, **kwargs)
        # no heads left: the output is the o_proj bias (or zero); the cache still records the step so that
        # its sequence length stays right for generation
        b, t = hidden_states.shape[:2]
        if cache is not None:
            empty = hidden_states.new_zeros(b, 0, t, self.head_dim)
            cache.update(empty, empty, self.layer_idx)
        out = hidden_states.new_zeros(*hidden_states.shape)
        if self.o_proj.bias is not None:
            out = out + self.o_proj.bias
        return out, None


class PvsLlamaMLP(LlamaMLP):
    """LlamaMLP with this layer's own intermediate size (zero works: down_proj then emits its bias)."""

    def __init__(self, config: PvsLlamaConfig, layer_idx: int):
        nn.Module.__init__(self)
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.layer_intermediate_size[layer_idx]
        d, f = self.hidden_size, self.intermediate_size
        self.gate_proj = _linear(d, f, config.mlp_bias)
        self.up_proj = _linear(d, f, config.mlp_bias)
        self.down_proj = _linear(f, d, config.layer_down_proj_bias[layer_idx])
        self.act_fn = ACT2FN[config.hidden_act]


class PvsLlamaDecoderLayer(LlamaDecoderLayer):
    """A Llama decoder layer at this layer's widths; forward is LlamaDecoderLayer's."""

    def __init__(self, config: PvsLlamaConfig, layer_idx: int):
        GradientCheckpointingLayer.__init__(self)
        self.hidden_size = config.hidden_size
        self.self_attn = PvsLlamaAttention(config, layer_idx)
        self.mlp = PvsLlamaMLP(config, layer_idx)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class PvsLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = PvsLlamaConfig
    config: PvsLlamaConfig
    _no_split_modules = ["PvsLlamaDecoderLayer"]


class PvsLlamaModel(PvsLlamaPreTrainedModel, LlamaModel):
    """LlamaModel built from PvsLlamaDecoderLayers; forward is LlamaModel's."""

    def __init__(self, config: PvsLlamaConfig):
        PvsLlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([PvsLlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class PvsLlamaForCausalLM(PvsLlamaPreTrainedModel, LlamaForCausalLM):
    """LlamaForCausalLM over a PvsLlamaModel; forward, generation and weight tying are LlamaForCausalLM's."""

    def __init__(self, config: PvsLlamaConfig):
        PvsLlamaPreTrainedModel.__init__(self, config)
        self.model = PvsLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


def register() -> None:
    """Make ``model_type="pvs_llama"`` loadable through the Auto classes (idempotent)."""
    try:
        AutoConfig.register(PvsLlamaConfig.model_type, PvsLlamaConfig)
    except ValueError:  # already registered (module reloaded)
        pass
    try:
        AutoModelForCausalLM.register(PvsLlamaConfig, PvsLlamaForCausalLM)
    except ValueError:
        pass


register()


def is_hetero(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None) == PvsLlamaConfig.model_type


__all__ = ["PvsLlamaConfig", "PvsLlamaForCausalLM", "PvsLlamaModel", "is_hetero", "register"]
