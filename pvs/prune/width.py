"""Minitron width pruning: cut residual channels and FFN neurons (optionally attention heads) ranked by
activation importance on calibration tokens, as in the authors' code (zlab-princeton/llm-pruning-collection,
pruning/minitron).

Importance, accumulated by forward hooks over calibration micro-batches of ``batch_size`` sequences:
- hidden channel j: over every decoder layer's two RMSNorm outputs (input_layernorm and
  post_attention_layernorm), sum over positions of (mean over the batch of |LN(X)|_{s,j})^2, summed over
  batches and norms. One global ranking: the same channels leave the embedding, every norm, the inputs of
  q/k/v/gate/up, the outputs of o_proj/down_proj and the input of the output head.
- FFN neuron j of layer l: the same statistic on the input of down_proj (SiLU(gate) * up), ranked per layer.
- with ``prune_heads=True`` (the authors' code does not prune heads; NVIDIA's Minitron paper does): head i of
  layer l scores the L2 norm of its attention output (its slice of o_proj's input) summed over all tokens.
  GQA: a KV group scores the sum of its query heads; the best groups are kept, then within each kept group
  its best query heads, the same number per group, so the result is valid GQA.

The target shape comes from ``pvs.prune.shapes.target_shape`` at the ratio (parameter-count rule), or
option ``target`` (a ModelShape or dict of its fields, e.g. from a shape table). The number of layers is
unchanged. Returns a new stock LlamaForCausalLM.

    result = get_method("minitron-width").fn(model, calib, 0.5)            # hidden + FFN
    result = get_method("minitron-width").fn(model, calib, 0.6, prune_heads=True)
"""
from __future__ import annotations

import dataclasses

import torch

from pvs.errors import check
from pvs.model import param_counts, shape_of
from pvs.shape import ModelShape
from pvs.prune.calib import check_calib, forward_with_hooks
from pvs.prune.registry import (MINITRON_CALIBRATION, PruneResult, check_batch_size, check_options, check_ratio,
                                register)
from pvs.prune.shapes import DEFAULT_TOLERANCE, check_reachable, shape_dict, study_width_target, target_shape
from pvs.prune.surgery import decoder, head_dim, prune_width, result_info


def _batch_sq_mean_abs(x: torch.Tensor) -> torch.Tensor:
    """sum_s (mean_b |x_{b,s,j}|)^2 for x [b, s, n] -> [n] (the authors' per-batch aggregation)."""
    return x.detach().float().abs().mean(0).square().sum(0).double().cpu()


@torch.no_grad()
def activation_importance(model, calib: torch.Tensor, batch_size: int = 8, heads: bool = False) -> dict:
    """{"hidden": [d], "ffn": [[f] per layer], "heads": [[h] per layer] or None} importance scores."""
    check_batch_size(batch_size)
    calib = check_calib(calib, model.config.vocab_size)
    layers = decoder(model).layers
    hd = head_dim(model)
    hidden = torch.zeros(model.config.hidden_size, dtype=torch.float64)
    ffn = [torch.zeros(layer.mlp.down_proj.in_features, dtype=torch.float64) for layer in layers]
    head_scores = [torch.zeros(layer.self_attn.o_proj.in_features // hd, dtype=torch.float64) for layer in layers]
    handles = []

    def norm_hook(_m, _args, out):
        hidden.add_(_batch_sq_mean_abs(out))

    def ffn_hook(i):
        def fn(_m, args):
            ffn[i].add_(_batch_sq_mean_abs(args[0]))
        return fn

    def head_hook(i):
        def fn(_m, args):
            x = args[0].detach().float()
            head_scores[i].add_(x.unflatten(-1, (-1, hd)).norm(dim=-1).flatten(0, -2).sum(0).double().cpu())
        return fn

    for i, layer in enumerate(layers):
        handles.append(layer.input_layernorm.register_forward_hook(norm_hook))
        handles.append(layer.post_attention_layernorm.register_forward_hook(norm_hook))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(ffn_hook(i)))
        if heads:
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(head_hook(i)))
    forward_with_hooks(model, calib, batch_size, handles)
    return {"hidden": hidden, "ffn": ffn, "heads": head_scores if heads else None}


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores (ties: the lower index), sorted."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def select_heads(scores: torch.Tensor, n_kv: int, target_heads: int, target_kv: int):
    """(query heads, KV heads) to keep in one layer: the best ``target_kv`` KV groups by summed query-head
    score, then the best ``target_heads / target_kv`` query heads inside each kept group."""
    n_heads = scores.numel()
    rep, new_rep = n_heads // n_kv, target_heads // target_kv
    groups = scores.view(n_kv, rep)
    kv_keep = _top(groups.sum(1), target_kv)
    q_keep = torch.cat([g * rep + _top(groups[g], new_rep) for g in kv_keep.tolist()])
    return q_keep, kv_keep


def prune_to_shape(model, scores: dict, target: ModelShape):
    """Cut ``model`` to ``target`` (same depth) keeping the highest-scoring channels, neurons and heads."""
    parent = shape_of(model)
    check_reachable(parent, target)
    check(target.n_layers == parent.n_layers,
          f"width target has n_layers={target.n_layers}; width pruning keeps the parent's {parent.n_layers}")
    n = parent.n_layers
    heads_keep = kv_keep = None
    if (target.n_heads, target.n_kv_heads) != (parent.n_heads, parent.n_kv_heads):
        check(scores.get("heads") is not None, "target prunes heads but no head scores were computed "
                                               "(activation_importance(..., heads=True))")
        plans = [select_heads(s, parent.n_kv_heads, target.n_heads, target.n_kv_heads) for s in scores["heads"]]
        heads_keep, kv_keep = [p[0] for p in plans], [p[1] for p in plans]
    return prune_width(model, hidden_keep=_top(scores["hidden"], target.hidden), heads_keep=heads_keep,
                       kv_heads_keep=kv_keep, ffn_keep=[_top(s, target.ffn) for s in scores["ffn"][:n]])


def _as_shape(target, parent: ModelShape) -> ModelShape:
    if isinstance(target, ModelShape):
        return target
    check(isinstance(target, dict), f"target_shape={target!r}; expected a ModelShape or a dict of its fields")
    fields = {f.name for f in dataclasses.fields(ModelShape)}
    unknown = sorted(set(target) - fields)
    check(not unknown, f"target has unknown field(s) {unknown}; allowed: {sorted(fields)}")
    return dataclasses.replace(parent, **target)


def _study_options(cfg, ratio: float) -> dict:
    return {"target_shape": study_width_target(cfg, ratio)}  # the parent's shape table decides the width


@register("minitron-width", "width", authors=MINITRON_CALIBRATION, study_options=_study_options,
          scorer="activation importance of hidden channels and FFN neurons (heads kept)")
def minitron_width(model, calib, ratio, **options) -> PruneResult:
    """Prune hidden channels and FFN neurons (and heads with prune_heads=True) by activation importance."""
    check_options("minitron-width", options, ("prune_heads", "target_shape", "tolerance", "batch_size",
                                                "hidden_step", "ffn_step"))
    check_ratio(ratio)
    check(model.config.model_type == "llama",
          f"minitron-width needs a uniform Llama parent; got model_type={model.config.model_type!r}")
    parent = shape_of(model)
    prune_heads = bool(options.get("prune_heads", False))
    if options.get("target_shape") is not None:
        target, criterion = _as_shape(options["target_shape"], parent), "given"
    else:
        steps = {k: options[k] for k in ("hidden_step", "ffn_step") if options.get(k) is not None}
        target = target_shape(parent, ratio, "width", options.get("tolerance", DEFAULT_TOLERANCE), prune_heads,
                              **steps)
        criterion = "params"
    parent_counts = param_counts(model)
    needs_heads = (target.n_heads, target.n_kv_heads) != (parent.n_heads, parent.n_kv_heads)
    scores = activation_importance(model, calib, options.get("batch_size", 8), heads=needs_heads)
    pruned = prune_to_shape(model, scores, target)
    info = result_info("minitron-width", ratio, parent_counts, pruned, target_shape=shape_dict(target),
                       target_criterion=criterion, prune_heads=needs_heads,
                       calib={"n_samples": int(calib.shape[0]), "seq_len": int(calib.shape[1])})
    return PruneResult(pruned, None, info)
