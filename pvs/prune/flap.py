"""FLAP (An et al., 2024): fluctuation-based structured pruning with bias compensation, GQA-aware.

1. One calibration pass through the parent records, per layer, the mean and the sample variance over all
   calibration tokens of every input channel of o_proj (attention output, per head) and of down_proj
   (FFN neurons).
2. Fluctuation metric (WIFV): channel j scores var_j * ||W[:, j]||^2 (W: o_proj or down_proj weight). As
   upstream FLAP, the o_proj score is then squared.
3. Adaptive structure "AL-AM": each layer's scores are standardised (z-scores) per module; attention units
   score the mean z of their channels; attention units and FFN neurons of ALL layers are ranked jointly, each
   weighted by its parameter count (an FFN neuron is 3*d parameters), and the best are kept until the model
   retains (1 - ratio) of the parent's non-embedding parameters (the prefix whose size is nearest that).
4. Bias compensation (option ``bias_compensation``, default True): a removed channel's mean input is a
   constant contribution to the output, so o_proj and down_proj get the bias W[:, removed] @ mean(X[removed]).
   The removed o_proj channels are those of the removed attention units (whole groups, or single heads).

GQA (upstream FLAP is MHA-only and indexes k/v with the query-head mask, which is wrong for GQA). Option
``unit`` picks the attention unit; the default keeps committed results unchanged:

- ``unit="kv-group"`` (default, our first decision): whole KV GROUPS (one KV head with its query heads). A
  group is what actually frees K/V parameters and KV cache, a single joint ranking over groups stays a plain
  threshold, and every layer remains valid GQA with its own group count. The price is a coarser unit
  (Llama-3.1-8B: 8 groups per layer instead of 32 heads).
- ``unit="head"`` (closer to FLAP's idea, whose unit is the head): each QUERY HEAD is a unit, scored by the
  mean z of its own channels and sized as its q/o rows plus its share (1/group size) of its group's k/v.
  After the joint threshold, a KV group survives while any of its query heads does; a group whose query
  heads are all below the threshold is removed with its k/v. pvs's per-layer model needs the same number of
  query heads in every kept group of a layer (``pvs.hetero``), so each layer keeps
  r = round-half-up(selected heads / surviving groups), clamped to 1..group size, in every surviving group:
  that group's r best-scored heads. r x groups stays nearest the layer's selected head count, so the
  threshold's per-layer attention budget is kept. The parameters this rounding and the real k/v cost add
  or free are given back to the FFN: the FFN neurons are re-chosen as the prefix of their joint ranking
  whose size is nearest the remaining budget (the FFN threshold moves by a few neurons; it is still one
  threshold across layers). ``info["layers"][i]["heads_kept"]`` lists each layer's kept query heads (parent
  indices).

A layer may lose all its groups or all its neurons: that module then only adds its compensation bias.

The result has per-layer widths and biases, so it is a ``PvsLlamaForCausalLM`` (``pvs.hetero``).

    result = get_method("flap").fn(model, calib, 0.5)                  # bias_compensation=True
    result = get_method("flap").fn(model, calib, 0.5, unit="head")     # per-query-head unit
    result.info["layers"]      # per layer: kv groups, heads and FFN neurons kept
"""
from __future__ import annotations

import torch

from pvs.errors import check
from pvs.model import param_counts
from pvs.prune.calib import check_calib, forward_with_hooks
from pvs.prune.registry import Calibration, PruneResult, check_batch_size, check_options, check_ratio, register
from pvs.prune.surgery import decoder, head_dim, layer_widths, prune_width, result_info

UNITS = ("kv-group", "head")
"""Attention units FLAP ranks (option ``unit``): whole KV groups (default) or query heads."""


class ChannelMoments:
    """Running sum and sum of squares per input channel (float64), for mean and sample variance."""

    def __init__(self, n: int):
        self.sum = torch.zeros(n, dtype=torch.float64)
        self.sq = torch.zeros(n, dtype=torch.float64)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double().cpu()
        self.sum += x.sum(0)
        self.sq += x.square().sum(0)
        self.count += x.shape[0]

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    def var(self) -> torch.Tensor:
        """Sample variance (n - 1), clamped at 0 against rounding."""
        n = self.count
        return ((self.sq - self.sum.square() / max(n, 1)) / max(n - 1, 1)).clamp_min(0)


@torch.no_grad()
def input_moments(model, calib: torch.Tensor, batch_size: int = 8) -> list[dict[str, ChannelMoments]]:
    """Per layer {"o_proj": moments of o_proj's input, "down_proj": moments of down_proj's input}."""
    check_batch_size(batch_size)
    calib = check_calib(calib, model.config.vocab_size)
    stats, handles = [], []
    for layer in decoder(model).layers:
        o, down = layer.self_attn.o_proj, layer.mlp.down_proj
        st = {"o_proj": ChannelMoments(o.in_features), "down_proj": ChannelMoments(down.in_features)}
        stats.append(st)
        handles.append(o.register_forward_pre_hook(lambda _m, a, st=st: st["o_proj"].add(a[0])))
        handles.append(down.register_forward_pre_hook(lambda _m, a, st=st: st["down_proj"].add(a[0])))
    forward_with_hooks(model, calib, batch_size, handles)
    return stats


def _zscore(x: torch.Tensor) -> torch.Tensor:
    if x.numel() < 2:
        return torch.zeros_like(x)
    std = x.std()
    return (x - x.mean()) / std if std > 0 else torch.zeros_like(x)


def check_unit(unit) -> None:
    check(unit in UNITS, f"unit={unit!r} for flap's attention; allowed: {', '.join(UNITS)}")


def flap_scores(model, stats, unit: str = "kv-group") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Standardised scores: per layer [attention units] and [ffn neurons]. An attention unit is a KV group
    (``unit="kv-group"``) or a query head (``unit="head"``); it scores the mean z of its o_proj channels."""
    check_unit(unit)
    hd = head_dim(model)
    unit_scores, ffn_scores = [], []
    for layer, w, st in zip(decoder(model).layers, layer_widths(model), stats):
        col_sq_o = layer.self_attn.o_proj.weight.detach().double().cpu().square().sum(0)
        col_sq_d = layer.mlp.down_proj.weight.detach().double().cpu().square().sum(0)
        attn = _zscore((st["o_proj"].var() * col_sq_o).square())
        ffn_scores.append(_zscore(st["down_proj"].var() * col_sq_d))
        check(attn.numel() == w["heads"] * hd, "o_proj input width does not match the layer's heads")
        # channels of the query heads of group g are contiguous: heads g*rep .. (g+1)*rep-1
        n_units = w["kv_heads"] if unit == "kv-group" else w["heads"]
        unit_scores.append(attn.view(n_units, -1).mean(1) if n_units else attn.new_zeros(0))
    return unit_scores, ffn_scores


def _unit_params(d: int, hd: int, w: dict, unit: str) -> float:
    """Parameters one attention unit stands for in the ranking: a KV group's q/o of its query heads and its
    k/v; a query head's q/o rows plus its share of its group's k/v (so a group's heads sum to the group)."""
    rep = w["heads"] // w["kv_heads"] if w["kv_heads"] else 0
    if unit == "kv-group":
        return d * hd * (2 * rep + 2)
    return d * hd * (2 + 2 / rep) if rep else 0


def retained_budget(model, ratio: float, parent_non_embedding: int, added_params: int = 0) -> float:
    """Parameters the prunable units (attention and FFN) may keep so that the model keeps (1 - ratio) of the
    parent's non-embedding parameters, counting ``added_params`` (compensation biases) as kept."""
    d, hd = model.config.hidden_size, head_dim(model)
    prunable = sum(d * hd * 2 * (w["heads"] + w["kv_heads"]) + 3 * d * w["ffn"] for w in layer_widths(model))
    fixed = parent_non_embedding - prunable  # norms (and anything else not cut)
    retain = (1 - ratio) * parent_non_embedding - fixed - added_params
    check(retain > 0, f"ratio={ratio} would remove more than all prunable parameters (norms stay); "
                      f"allowed: ratio < {prunable / parent_non_embedding:.3f}")
    return retain


def select_units(model, group_scores, ffn_scores, ratio: float, parent_non_embedding: int, added_params: int = 0,
                 unit: str = "kv-group"):
    """Jointly ranked units kept so the model keeps the share of non-embedding params nearest (1 - ratio),
    counting ``added_params`` (the compensation biases) as kept. Returns (attention units kept per layer:
    KV groups, or query heads with ``unit="head"``; ffn neurons kept per layer)."""
    check_unit(unit)
    d, hd = model.config.hidden_size, head_dim(model)
    widths = layer_widths(model)
    scores, sizes, owners = [], [], []  # owners: (layer, "attn"|"ffn", index)
    for i, w in enumerate(widths):
        unit_params = _unit_params(d, hd, w, unit)
        for g, s in enumerate(group_scores[i].tolist()):
            scores.append(s), sizes.append(unit_params), owners.append((i, "attn", g))
        for j, s in enumerate(ffn_scores[i].tolist()):
            scores.append(s), sizes.append(3 * d), owners.append((i, "ffn", j))
    retain = retained_budget(model, ratio, parent_non_embedding, added_params)
    order = torch.sort(torch.tensor(scores, dtype=torch.float64), descending=True, stable=True).indices
    cum = torch.cumsum(torch.tensor(sizes, dtype=torch.float64)[order], 0)
    n_keep = int(torch.argmin((cum - retain).abs())) + 1
    kept_groups = [[] for _ in widths]
    kept_ffn = [[] for _ in widths]
    for u in order[:n_keep].tolist():
        i, kind, idx = owners[u]
        (kept_groups if kind == "attn" else kept_ffn)[i].append(idx)
    return [_as_index(x) for x in kept_groups], [_as_index(x) for x in kept_ffn]


def _as_index(xs) -> torch.Tensor:
    return torch.tensor(sorted(xs), dtype=torch.long)


def equal_heads_per_group(head_scores: torch.Tensor, selected: torch.Tensor, rep: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's (query heads kept, KV groups kept) from the heads the joint threshold ``selected``: a group
    survives iff any of its heads (head // rep) is selected, and every surviving group keeps its r best-scored
    heads, r = round-half-up(len(selected) / surviving groups) in 1..rep (the same r in every group, as GQA in
    pvs's per-layer model needs). Ties in score go to the lower head index."""
    selected = torch.as_tensor(selected, dtype=torch.long)
    groups = torch.unique(selected // rep, sorted=True) if rep else selected.new_zeros(0)
    if groups.numel() == 0:
        return selected.new_zeros(0), groups
    r = min(rep, max(1, int(selected.numel() / groups.numel() + 0.5)))
    heads = []
    for g in groups.tolist():
        members = torch.arange(g * rep, (g + 1) * rep)
        order = torch.sort(head_scores[members].double(), descending=True, stable=True).indices
        heads.extend(members[order[:r]].tolist())
    return _as_index(heads), groups


def refit_ffn(model, ffn_scores, budget: float) -> list[torch.Tensor]:
    """FFN neurons per layer: the prefix of the joint ranking of all layers' standardised FFN scores whose
    size (3*d per neuron) is nearest ``budget`` (possibly none)."""
    d = model.config.hidden_size
    scores = torch.cat([z.double() for z in ffn_scores])
    layer_of = torch.cat([torch.full((z.numel(),), i, dtype=torch.long) for i, z in enumerate(ffn_scores)])
    index_in_layer = torch.cat([torch.arange(z.numel()) for z in ffn_scores])
    order = torch.sort(scores, descending=True, stable=True).indices
    cum = torch.arange(order.numel() + 1, dtype=torch.float64) * (3 * d)  # sizes of prefixes 0..n
    n_keep = int(torch.argmin((cum - budget).abs()))
    kept = order[:n_keep]
    return [_as_index(index_in_layer[kept][layer_of[kept] == i].tolist()) for i in range(len(ffn_scores))]


def select_heads(model, head_scores, ffn_scores, ratio: float, parent_non_embedding: int,
                 added_params: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """``unit="head"``: the joint threshold over query heads and FFN neurons, then per layer equal heads per
    surviving KV group (``equal_heads_per_group``), then the FFN re-chosen to meet the budget exactly
    (``refit_ffn``). Returns (query heads kept, KV groups kept, FFN neurons kept), per layer."""
    d, hd = model.config.hidden_size, head_dim(model)
    selected, _ = select_units(model, head_scores, ffn_scores, ratio, parent_non_embedding, added_params, "head")
    heads_keep, kv_keep = [], []
    attn_params = 0
    for w, scores, sel in zip(layer_widths(model), head_scores, selected):
        rep = w["heads"] // w["kv_heads"] if w["kv_heads"] else 0
        heads, groups = equal_heads_per_group(scores, sel, rep)
        heads_keep.append(heads), kv_keep.append(groups)
        attn_params += d * hd * 2 * (heads.numel() + groups.numel())
    budget = retained_budget(model, ratio, parent_non_embedding, added_params) - attn_params
    return heads_keep, kv_keep, refit_ffn(model, ffn_scores, budget)


def _o_proj_keep_mask(w: dict, hd: int, kept_units: torch.Tensor, unit: str) -> torch.Tensor:
    """Which o_proj input channels survive: those of the kept KV groups' query heads, or of the kept heads."""
    rep = w["heads"] // w["kv_heads"] if w["kv_heads"] else 0
    width = rep * hd if unit == "kv-group" else hd  # o_proj channels of one unit
    keep = torch.zeros(w["heads"] * hd, dtype=torch.bool)
    for u in kept_units.tolist():
        keep[u * width:(u + 1) * width] = True
    return keep


def compensation_biases(model, stats, kept_groups, kept_ffn, unit: str = "kv-group"):
    """Per layer o_proj and down_proj biases W[:, removed] @ mean(X[removed]) (None where nothing is removed).
    ``kept_groups`` holds the kept attention units per layer: KV groups, or query heads with ``unit="head"``."""
    check_unit(unit)
    hd = head_dim(model)
    o_bias, down_bias = [], []
    for layer, w, st, units, ffn in zip(decoder(model).layers, layer_widths(model), stats, kept_groups, kept_ffn):
        keep_o = _o_proj_keep_mask(w, hd, units, unit)
        keep_d = torch.zeros(w["ffn"], dtype=torch.bool)
        keep_d[ffn] = True
        for lin, keep, mean, out in ((layer.self_attn.o_proj, keep_o, st["o_proj"].mean(), o_bias),
                                     (layer.mlp.down_proj, keep_d, st["down_proj"].mean(), down_bias)):
            removed = ~keep
            if not bool(removed.any()):
                out.append(None)
                continue
            W = lin.weight.detach().double().cpu()
            out.append((W[:, removed] @ mean[removed]).float())
    return o_bias, down_bias


@register("flap", "width", per_layer_widths=True,
          authors=Calibration("WikiText-2 train", 2048, 128, "FLAP main.py (LPC pruning/FLAP)"),
          scorer="weighted input fluctuation, ranked jointly across layers and modules; bias compensation")
def flap(model, calib, ratio, **options) -> PruneResult:
    """FLAP with adaptive structure across layers and modules; attention units are whole KV groups
    (``unit="kv-group"``, default) or query heads inside their KV groups (``unit="head"``), see the module
    docstring. Options: bias_compensation (default True), unit, batch_size."""
    check_options("flap", options, ("bias_compensation", "batch_size", "unit"))
    check_ratio(ratio)
    unit = options.get("unit", "kv-group")
    check_unit(unit)
    bias = bool(options.get("bias_compensation", True))
    parent_counts = param_counts(model)
    stats = input_moments(model, calib, options.get("batch_size", 8))
    unit_scores, ffn_scores = flap_scores(model, stats, unit)
    # each compensated module gains a [hidden] bias; budget for all of them (nearly every module loses units)
    added = 2 * len(stats) * model.config.hidden_size if bias else 0
    if unit == "kv-group":
        kept_units, kept_ffn = select_units(model, unit_scores, ffn_scores, ratio, parent_counts["non_embedding"],
                                            added)
        heads_keep, kv_keep = None, kept_units
    else:
        heads_keep, kv_keep, kept_ffn = select_heads(model, unit_scores, ffn_scores, ratio,
                                                     parent_counts["non_embedding"], added)
        kept_units = heads_keep
    o_bias, down_bias = (compensation_biases(model, stats, kept_units, kept_ffn, unit) if bias else (None, None))
    pruned = prune_width(model, heads_keep=heads_keep, kv_heads_keep=kv_keep, ffn_keep=kept_ffn,
                         o_proj_bias=o_bias, down_proj_bias=down_bias)
    layers = [{"kv_heads": w["kv_heads"], "heads": w["heads"], "ffn": w["ffn"]} for w in layer_widths(pruned)]
    if unit == "head":
        for entry, heads in zip(layers, heads_keep):
            entry["heads_kept"] = heads.tolist()
    info = result_info("flap", ratio, parent_counts, pruned, bias_compensation=bias,
                       attention_unit="kv_group" if unit == "kv-group" else "head",
                       structure="AL-AM", metric="WIFV", layers=layers,
                       calib={"n_samples": int(calib.shape[0]), "seq_len": int(calib.shape[1])})
    return PruneResult(pruned, None, info)
