"""Model surgery for structured pruning: cut decoder layers, residual channels, heads and FFN neurons.

Every structured method (Minitron depth/width, ShortGPT, FLAP, Sheared LLaMA) decides WHAT to keep from
its own scores and then calls one of these to build the smaller model. Both return a NEW model (the
parent is untouched) with the kept weights copied, on the parent's device and dtype:

    small = keep_layers(model, [0, 1, 5, 6, 7])                     # depth: those layers, in that order
    small = prune_width(model, hidden_keep=torch.arange(48),        # width: residual channels kept,
                        heads_keep=[...], kv_heads_keep=[...],      #   per-layer query / KV heads kept,
                        ffn_keep=[...])                             #   per-layer FFN neurons kept

Indices are LongTensors into the parent's dimensions (any order; they are sorted, so the kept units stay in
the parent's order). Per-layer lists may hold None for "keep all of this layer". The result is a stock
``LlamaForCausalLM`` when every layer has the same widths and the stock config accepts them (hidden divisible
by heads, no o_proj/down_proj bias), else a ``PvsLlamaForCausalLM`` (see ``pvs.hetero``). ``head_dim``
never changes and is always explicit in the config.

GQA rule for heads: query head q belongs to KV head q // (heads / kv_heads). Every kept query head's KV head
must be kept, and each kept KV head must keep the same number of query heads, so the result is valid GQA.
Giving only ``heads_keep`` keeps the KV heads they use; giving only ``kv_heads_keep`` keeps whole groups.

``layers_view(model, keep)`` runs the parent with only some layers, without copying (for scoring).
"""
from __future__ import annotations

import re
from contextlib import contextmanager

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.initialization import no_init_weights

from pvs.errors import check
from pvs.model import param_counts, require_llama
from pvs.hetero import PvsLlamaConfig, PvsLlamaForCausalLM

# config keys that describe a saved checkpoint or a model class rather than a shape
_DROP_KEYS = ("model_type", "architectures", "transformers_version", "layer_num_heads", "layer_num_kv_heads",
              "layer_intermediate_size", "layer_o_proj_bias", "layer_down_proj_bias")
_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.*)$")


def decoder(model: nn.Module) -> nn.Module:
    """The LlamaModel inside a causal LM (checks that it is Llama-family)."""
    require_llama(getattr(model, "config", None), "model")
    return model.model


def head_dim(model: nn.Module) -> int:
    return head_dim_of(model.config)


def layer_widths(model: nn.Module) -> list[dict]:
    """Each decoder layer's widths, read from its modules: heads, kv_heads, ffn and the bias flags."""
    hd = head_dim(model)
    out = []
    for layer in decoder(model).layers:
        attn, mlp = layer.self_attn, layer.mlp
        out.append({"heads": attn.q_proj.out_features // hd, "kv_heads": attn.k_proj.out_features // hd,
                    "ffn": mlp.up_proj.out_features, "o_proj_bias": attn.o_proj.bias is not None,
                    "down_proj_bias": mlp.down_proj.bias is not None})
    return out


def make_config(parent_config, hidden: int, widths: list[dict]):
    """A config for ``len(widths)`` layers at these widths: a stock LlamaConfig when it can describe them,
    else a PvsLlamaConfig with per-layer lists."""
    base = {k: v for k, v in parent_config.to_dict().items() if k not in _DROP_KEYS}
    n = len(widths)
    check(n >= 1, "a model needs at least one decoder layer; got 0 layers to keep")
    heads = [w["heads"] for w in widths]
    kv = [w["kv_heads"] for w in widths]
    ffn = [w["ffn"] for w in widths]
    o_bias = [bool(w["o_proj_bias"]) for w in widths]
    down_bias = [bool(w["down_proj_bias"]) for w in widths]
    base.update(hidden_size=hidden, num_hidden_layers=n, head_dim=head_dim_of(parent_config),
                num_attention_heads=max(max(heads), 1), num_key_value_heads=max(max(kv), 1),
                intermediate_size=max(ffn))
    uniform = len(set(zip(heads, kv, ffn, o_bias, down_bias))) == 1
    attn_bias, mlp_bias = bool(base.get("attention_bias")), bool(base.get("mlp_bias"))
    stock_ok = (uniform and heads[0] > 0 and ffn[0] > 0 and hidden % heads[0] == 0
                and o_bias[0] == attn_bias and down_bias[0] == mlp_bias)
    if stock_ok:
        return LlamaConfig(**base)
    return PvsLlamaConfig(**base, layer_num_heads=heads, layer_num_kv_heads=kv, layer_intermediate_size=ffn,
                          layer_o_proj_bias=o_bias, layer_down_proj_bias=down_bias)


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def build_like(parent: nn.Module, config, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A model for ``config`` on the parent's device and dtype holding exactly ``state_dict``."""
    param = next(parent.parameters())
    cls = PvsLlamaForCausalLM if isinstance(config, PvsLlamaConfig) else LlamaForCausalLM
    # weights are overwritten right away, so skip random init (slow for big models)
    with torch.device(param.device), no_init_weights():
        model = cls._from_config(config, dtype=param.dtype)
    expected = set(model.state_dict())
    missing = expected - set(state_dict)
    if config.tie_word_embeddings:
        missing.discard("lm_head.weight")
    unexpected = set(state_dict) - expected
    if missing or unexpected:  # a surgery bug, not bad user input
        raise RuntimeError(f"surgery produced a state dict that does not fit {cls.__name__}: "
                           f"missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
    model.load_state_dict(state_dict, strict=False)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.train(parent.training)
    return model


def _parent_state(model: nn.Module) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)  # re-tied after loading
    return sd


def keep_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """A new model with only decoder layers ``keep`` (in that order); num_hidden_layers and every
    attention's layer_idx follow the new numbering."""
    n = len(decoder(model).layers)
    keep = [int(i) for i in (keep.tolist() if isinstance(keep, torch.Tensor) else keep)]
    check(len(keep) >= 1, "keep_layers needs at least one layer to keep; got an empty list")
    check(len(set(keep)) == len(keep), f"layers to keep {keep} contain duplicates; each layer at most once")
    bad = [i for i in keep if not 0 <= i < n]
    check(not bad, f"layers to keep {bad} are out of range; allowed: 0..{n - 1} (the parent has {n} layers)")
    widths = layer_widths(model)
    config = make_config(model.config, model.config.hidden_size, [widths[i] for i in keep])
    new_index = {old: new for new, old in enumerate(keep)}
    sd = {}
    for name, tensor in _parent_state(model).items():
        m = _LAYER_KEY.match(name)
        if m is None:
            sd[name] = tensor.clone()
        elif int(m.group(1)) in new_index:
            sd[f"model.layers.{new_index[int(m.group(1))]}.{m.group(2)}"] = tensor.clone()
    return build_like(model, config, sd)


def _index_list(idx, size: int, what: str) -> torch.Tensor | None:
    """Sorted unique LongTensor of kept indices into a dimension of ``size`` (None: keep all)."""
    if idx is None:
        return None
    t = torch.as_tensor(idx).flatten().long().cpu()
    check(t.numel() == 0 or (int(t.min()) >= 0 and int(t.max()) < size),
          f"{what}: indices must be in 0..{size - 1}; got {t.min().item()}..{t.max().item()}"
          if t.numel() else f"{what}: empty")
    s = torch.unique(t, sorted=True)
    check(s.numel() == t.numel(), f"{what}: {t.numel() - s.numel()} duplicate indices; each unit at most once")
    return s


def _per_layer(values, n: int, what: str) -> list:
    if values is None:
        return [None] * n
    check(isinstance(values, (list, tuple)) and len(values) == n,
          f"{what} must be a list with one entry per layer ({n}); got "
          f"{type(values).__name__}{'' if not isinstance(values, (list, tuple)) else ' of ' + str(len(values))}")
    return list(values)


def gqa_plan(n_heads: int, n_kv: int, heads_keep, kv_keep, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (query heads, KV heads) to keep in one layer; see the module docstring for the GQA rule."""
    q = _index_list(heads_keep, n_heads, f"layer {layer} heads_keep")
    kv = _index_list(kv_keep, n_kv, f"layer {layer} kv_heads_keep")
    rep = n_heads // n_kv if n_kv else 1
    if q is None and kv is None:
        return torch.arange(n_heads), torch.arange(n_kv)
    if q is None:  # whole groups of the kept KV heads
        q = (kv[:, None] * rep + torch.arange(rep)[None]).flatten()
    if kv is None:
        kv = torch.unique(q // rep, sorted=True)
    owners = q // rep
    orphan = sorted(set(owners.tolist()) - set(kv.tolist()))
    check(not orphan, f"layer {layer}: kept query heads use KV heads {orphan}, which kv_heads_keep drops; "
                      f"a kept query head's KV head (head // {rep}) must be kept")
    per_group = [int((owners == k).sum()) for k in kv.tolist()]
    check(len(set(per_group)) <= 1 and (not per_group or per_group[0] > 0),
          f"layer {layer}: kept KV heads {kv.tolist()} keep {per_group} query heads each; GQA needs the same "
          f"positive number of query heads per kept KV head")
    return q, kv


def _rows(heads: torch.Tensor, hd: int) -> torch.Tensor:
    """Projection rows (or o_proj columns) of these heads."""
    return (heads[:, None] * hd + torch.arange(hd)[None]).flatten()


def prune_width(model: nn.Module, hidden_keep=None, heads_keep=None, kv_heads_keep=None, ffn_keep=None,
                o_proj_bias=None, down_proj_bias=None) -> nn.Module:
    """A new model keeping residual channels ``hidden_keep`` and, per layer, query heads ``heads_keep[i]``,
    KV heads ``kv_heads_keep[i]`` and FFN neurons ``ffn_keep[i]`` (None anywhere: keep all).

    ``o_proj_bias`` / ``down_proj_bias``: optional per-layer lists of [parent hidden] tensors (or None) added
    to that module's output bias, creating the bias if the parent has none (FLAP's bias compensation); they
    are in the parent's residual coordinates and cut by ``hidden_keep`` like the weights."""
    layers = decoder(model).layers
    n, d, hd = len(layers), model.config.hidden_size, head_dim(model)
    widths = layer_widths(model)
    h = _index_list(hidden_keep, d, "hidden_keep")
    check(h is None or h.numel() > 0, "hidden_keep is empty; keep at least one residual channel")
    heads_keep = _per_layer(heads_keep, n, "heads_keep")
    kv_heads_keep = _per_layer(kv_heads_keep, n, "kv_heads_keep")
    ffn_keep = _per_layer(ffn_keep, n, "ffn_keep")
    extra_bias = {"self_attn.o_proj": _per_layer(o_proj_bias, n, "o_proj_bias"),
                  "mlp.down_proj": _per_layer(down_proj_bias, n, "down_proj_bias")}
    for module, biases in extra_bias.items():
        for i, b in enumerate(biases):
            if b is not None:
                check(tuple(b.shape) == (d,), f"layer {i} {module} bias has shape {tuple(b.shape)}; "
                                              f"expected ({d},) (the parent's hidden size)")
    plans, new_widths = [], []
    for i, w in enumerate(widths):
        q, kv = gqa_plan(w["heads"], w["kv_heads"], heads_keep[i], kv_heads_keep[i], i)
        f = _index_list(ffn_keep[i], w["ffn"], f"layer {i} ffn_keep")
        f = torch.arange(w["ffn"]) if f is None else f
        plans.append((_rows(q, hd), _rows(kv, hd), f))
        new_widths.append(dict(w, heads=q.numel(), kv_heads=kv.numel(), ffn=f.numel(),
                               o_proj_bias=w["o_proj_bias"] or extra_bias["self_attn.o_proj"][i] is not None,
                               down_proj_bias=w["down_proj_bias"] or extra_bias["mlp.down_proj"][i] is not None))
    config = make_config(model.config, d if h is None else h.numel(), new_widths)

    def cut(t: torch.Tensor, dim: int, idx: torch.Tensor | None) -> torch.Tensor:
        return t if idx is None else t.index_select(dim, idx.to(t.device))

    state = _parent_state(model)
    for module, biases in extra_bias.items():  # new or summed output biases, in parent coordinates
        for i, b in enumerate(biases):
            if b is not None:
                key = f"model.layers.{i}.{module}.bias"
                old = state.get(key)
                b = b.to(device=state[f"model.layers.{i}.{module}.weight"].device,
                         dtype=state[f"model.layers.{i}.{module}.weight"].dtype)
                state[key] = b if old is None else old + b
    sd = {}
    for name, t in state.items():
        m = _LAYER_KEY.match(name)
        if m is None:
            if name in ("model.embed_tokens.weight", "lm_head.weight"):
                t = cut(t, 1, h)
            elif name == "model.norm.weight":
                t = cut(t, 0, h)
            sd[name] = t.clone()
            continue
        q_rows, kv_rows, f = plans[int(m.group(1))]
        module, kind = m.group(2).rsplit(".", 1)
        if module.endswith("layernorm"):
            t = cut(t, 0, h)
        elif module.endswith(("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")):
            rows = q_rows if module.endswith("q_proj") else f if module.endswith(("gate_proj", "up_proj")) else kv_rows
            t = cut(t, 0, rows)
            if kind == "weight":
                t = cut(t, 1, h)
        elif module.endswith(("o_proj", "down_proj")):
            t = cut(t, 0, h)
            if kind == "weight":
                t = cut(t, 1, q_rows if module.endswith("o_proj") else f)
        sd[name] = t.clone()
    return build_like(model, config, sd)


@contextmanager
def layers_view(model: nn.Module, keep: list[int]):
    """Temporarily run ``model`` with only decoder layers ``keep`` (shared, not copied). For scoring only:
    layer_idx is not renumbered, so do not use a KV cache inside the view."""
    inner = decoder(model)
    saved_layers, saved_n = inner.layers, model.config.num_hidden_layers
    inner.layers = nn.ModuleList([saved_layers[i] for i in keep])
    model.config.num_hidden_layers = len(keep)
    try:
        yield model
    finally:
        inner.layers = saved_layers
        model.config.num_hidden_layers = saved_n


def result_info(method: str, ratio: float, parent_counts: dict, pruned: nn.Module, **extra) -> dict:
    """The PruneResult.info keys every structured method reports: requested vs achieved ratio (fraction of
    the parent's non-embedding parameters removed) and the pruned model's parameter counts."""
    counts = param_counts(pruned)
    info = {"method": method, "ratio": float(ratio),
            "achieved_ratio": 1.0 - counts["non_embedding"] / parent_counts["non_embedding"],
            "total_params": counts["total"], "non_embedding_params": counts["non_embedding"],
            "parent_total_params": parent_counts["total"],
            "parent_non_embedding_params": parent_counts["non_embedding"],
            "model_type": pruned.config.model_type}
    info.update(extra)
    return info
