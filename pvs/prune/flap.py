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

GQA (our decision; upstream FLAP indexes k/v with the query-head mask, which is wrong for GQA): attention is
pruned in units of whole KV GROUPS (one KV head with its query heads). A group is what actually frees K/V
parameters and KV cache, a single joint ranking over groups stays a plain threshold, and every layer remains
valid GQA with its own group count. The alternative, removing query heads evenly within groups, would tie
all groups of a layer together and remove no K/V weight. The price is a coarser unit (Llama-3.1-8B: 8 groups
per layer instead of 32 heads). A layer may lose all its groups or all its neurons: that module then only
adds its compensation bias.

The result has per-layer widths and biases, so it is a ``PvsLlamaForCausalLM`` (``pvs.prune.hetero``).

    result = get_method("flap").fn(model, calib, 0.5)                  # bias_compensation=True
    result.info["layers"]      # per layer: kv groups, heads and FFN neurons kept
"""
from __future__ import annotations

import torch

from pvs.errors import check
from pvs.model import param_counts
from pvs.prune.calib import check_calib, forward_with_hooks
from pvs.prune.depth import check_batch_size, check_options
from pvs.prune.registry import PruneResult, check_ratio, register
from pvs.prune.surgery import decoder, head_dim, layer_widths, prune_width, result_info


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


def flap_scores(model, stats) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Standardised scores: per layer [kv groups] for attention and [ffn neurons] for the MLP."""
    hd = head_dim(model)
    group_scores, ffn_scores = [], []
    for layer, w, st in zip(decoder(model).layers, layer_widths(model), stats):
        col_sq_o = layer.self_attn.o_proj.weight.detach().double().cpu().square().sum(0)
        col_sq_d = layer.mlp.down_proj.weight.detach().double().cpu().square().sum(0)
        attn = _zscore((st["o_proj"].var() * col_sq_o).square())
        ffn_scores.append(_zscore(st["down_proj"].var() * col_sq_d))
        n_kv = w["kv_heads"]
        check(attn.numel() == w["heads"] * hd, "o_proj input width does not match the layer's heads")
        # channels of the query heads of group g are contiguous: heads g*rep .. (g+1)*rep-1
        group_scores.append(attn.view(n_kv, -1).mean(1) if n_kv else attn.new_zeros(0))
    return group_scores, ffn_scores


def select_units(model, group_scores, ffn_scores, ratio: float, parent_non_embedding: int, added_params: int = 0):
    """Jointly ranked units kept so the model keeps the share of non-embedding params nearest (1 - ratio),
    counting ``added_params`` (the compensation biases) as kept. Returns (kv groups kept per layer, ffn
    neurons kept per layer)."""
    d, hd = model.config.hidden_size, head_dim(model)
    widths = layer_widths(model)
    scores, sizes, owners = [], [], []  # owners: (layer, "attn"|"ffn", index)
    for i, w in enumerate(widths):
        rep = w["heads"] // w["kv_heads"] if w["kv_heads"] else 0
        group_params = d * hd * (2 * rep + 2)  # q and o of rep heads, k and v of one KV head
        for g, s in enumerate(group_scores[i].tolist()):
            scores.append(s), sizes.append(group_params), owners.append((i, "attn", g))
        for j, s in enumerate(ffn_scores[i].tolist()):
            scores.append(s), sizes.append(3 * d), owners.append((i, "ffn", j))
    prunable = sum(sizes)
    fixed = parent_non_embedding - prunable  # norms (and anything else not cut)
    retain = (1 - ratio) * parent_non_embedding - fixed - added_params
    check(retain > 0, f"ratio={ratio} would remove more than all prunable parameters (norms stay); "
                      f"allowed: ratio < {prunable / parent_non_embedding:.3f}")
    order = torch.sort(torch.tensor(scores, dtype=torch.float64), descending=True, stable=True).indices
    cum = torch.cumsum(torch.tensor(sizes, dtype=torch.float64)[order], 0)
    n_keep = int(torch.argmin((cum - retain).abs())) + 1
    kept_groups = [[] for _ in widths]
    kept_ffn = [[] for _ in widths]
    for u in order[:n_keep].tolist():
        i, kind, idx = owners[u]
        (kept_groups if kind == "attn" else kept_ffn)[i].append(idx)
    as_index = lambda xs: torch.tensor(sorted(xs), dtype=torch.long)  # noqa: E731
    return [as_index(x) for x in kept_groups], [as_index(x) for x in kept_ffn]


def compensation_biases(model, stats, kept_groups, kept_ffn):
    """Per layer o_proj and down_proj biases W[:, removed] @ mean(X[removed]) (None where nothing is removed)."""
    hd = head_dim(model)
    o_bias, down_bias = [], []
    for layer, w, st, groups, ffn in zip(decoder(model).layers, layer_widths(model), stats, kept_groups, kept_ffn):
        rep = w["heads"] // w["kv_heads"] if w["kv_heads"] else 0
        keep_o = torch.zeros(w["heads"] * hd, dtype=torch.bool)
        for g in groups.tolist():
            keep_o[g * rep * hd:(g + 1) * rep * hd] = True
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


@register("flap", "width")
def flap(model, calib, ratio, **options) -> PruneResult:
    """FLAP with adaptive structure across layers and modules, whole-KV-group attention units."""
    check_options("flap", options, ("bias_compensation", "batch_size"))
    check_ratio(ratio)
    bias = bool(options.get("bias_compensation", True))
    parent_counts = param_counts(model)
    stats = input_moments(model, calib, options.get("batch_size", 8))
    group_scores, ffn_scores = flap_scores(model, stats)
    # each compensated module gains a [hidden] bias; budget for all of them (nearly every module loses units)
    added = 2 * len(stats) * model.config.hidden_size if bias else 0
    kept_groups, kept_ffn = select_units(model, group_scores, ffn_scores, ratio, parent_counts["non_embedding"],
                                         added)
    o_bias, down_bias = compensation_biases(model, stats, kept_groups, kept_ffn) if bias else (None, None)
    pruned = prune_width(model, kv_heads_keep=kept_groups, ffn_keep=kept_ffn, o_proj_bias=o_bias,
                         down_proj_bias=down_bias)
    layers = [{"kv_heads": w["kv_heads"], "heads": w["heads"], "ffn": w["ffn"]} for w in layer_widths(pruned)]
    info = result_info("flap", ratio, parent_counts, pruned, bias_compensation=bias, attention_unit="kv_group",
                       structure="AL-AM", metric="WIFV", layers=layers,
                       calib={"n_samples": int(calib.shape[0]), "seq_len": int(calib.shape[1])})
    return PruneResult(pruned, None, info)
