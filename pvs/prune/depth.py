"""Depth pruning: remove whole decoder layers. Two methods, as in the authors' code (paper-notes §2b).

- ``minitron-depth``: remove ONE contiguous block of k layers. For every start index i, the parent minus
  layers [i, i+k) is scored on the calibration tokens, and the block whose removal scores best is removed.
  The scorer is the calibration LM loss (``scorer="loss"``, the only one): the authors' perplexity scorer
  (they rank by |ppl - unpruned ppl|; a pruned model's perplexity is above the parent's in practice, so that
  is the lowest perplexity, and perplexity = exp(loss) ranks like the loss). Their alternative scorer,
  WinoGrande accuracy through lm-eval, is not offered here.
- ``shortgpt``: Block Influence BI_l = 1 - mean over calibration tokens of cos(x_in, x_out) of layer l;
  the k least influential layers are dropped, wherever they are.

k follows from the ratio: the target keeps round(L * (1 - ratio)) layers (at least 1), because every layer
holds the same number of non-embedding parameters; ``info["achieved_ratio"]`` reports what that removes
(within half a layer of the request, see ``pvs.prune.shapes``). Option ``n_layers`` sets the number of
layers kept directly (e.g. from a shape table). Both methods return a new model (``keep_layers``).

    result = get_method("minitron-depth").fn(model, calib, 0.5)
    result.info["removed_layers"], result.info["achieved_ratio"]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pvs.errors import check
from pvs.model import ModelShape, param_counts
from pvs.prune.calib import check_calib
from pvs.prune.registry import PruneResult, check_ratio, register
from pvs.prune.shapes import depth_target
from pvs.prune.surgery import decoder, keep_layers, layers_view, result_info

SCORERS = ("loss",)


def check_options(method: str, options: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    check(not unknown, f"unknown option(s) {', '.join(map(repr, unknown))} for {method}; "
                       f"allowed: {', '.join(allowed) or '(none)'}")


def check_batch_size(batch_size) -> None:
    check(isinstance(batch_size, int) and batch_size > 0, f"batch_size={batch_size!r} must be a positive integer")


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def calibration_loss(model, calib: torch.Tensor, batch_size: int = 8) -> float:
    """Token-mean next-token cross-entropy of ``model`` on the calibration sequences."""
    check_batch_size(batch_size)
    calib = check_calib(calib, model.config.vocab_size)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for s in range(0, calib.shape[0], batch_size):
            x = calib[s:s + batch_size].to(_device(model))
            logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
            total += F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum").item()
            count += x[:, 1:].numel()
    finally:
        model.train(was_training)
    check(count > 0, "calibration sequences need at least 2 tokens each to score next-token loss")
    return total / count


def layers_to_keep(model, ratio: float, n_layers: int | None = None) -> int:
    """How many layers the depth target keeps: ``n_layers`` if given, else round(L * (1 - ratio))."""
    L = len(decoder(model).layers)
    if n_layers is not None:
        check(isinstance(n_layers, int) and 1 <= n_layers < L,
              f"n_layers={n_layers!r} layers to keep; allowed: 1..{L - 1} (the parent has {L})")
        return n_layers
    # only the layer count matters here, so a stand-in shape with the parent's depth is enough
    return depth_target(ModelShape(n_layers=L), ratio).n_layers


def minitron_depth_scores(model, calib: torch.Tensor, k: int, batch_size: int = 8) -> tuple[int, list[float]]:
    """Calibration loss of the parent minus each contiguous block of k layers; returns (best start, losses
    indexed by start)."""
    L = len(decoder(model).layers)
    check(1 <= k < L, f"block of k={k} layers to remove; allowed: 1..{L - 1}")
    losses = []
    for start in range(L - k + 1):
        keep = [i for i in range(L) if not start <= i < start + k]
        with layers_view(model, keep):
            losses.append(calibration_loss(model, calib, batch_size))
    return min(range(len(losses)), key=losses.__getitem__), losses


@torch.no_grad()
def block_influence(model, calib: torch.Tensor, batch_size: int = 8) -> list[float]:
    """ShortGPT's BI per layer: 1 - mean over all calibration tokens of cos(layer input, layer output)."""
    check_batch_size(batch_size)
    calib = check_calib(calib, model.config.vocab_size)
    layers = decoder(model).layers
    cos_sum = torch.zeros(len(layers), dtype=torch.float64)
    n_tokens = 0

    def hook(index):
        def fn(_module, args, kwargs, out):
            x_in = args[0] if args else kwargs["hidden_states"]
            x_out = out[0] if isinstance(out, (tuple, list)) else out
            cos = F.cosine_similarity(x_in.float(), x_out.float(), dim=-1)
            cos_sum[index] += cos.double().sum().cpu()
        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for s in range(0, calib.shape[0], batch_size):
            x = calib[s:s + batch_size]
            model(input_ids=x.to(_device(model)), use_cache=False)
            n_tokens += x.numel()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return (1.0 - cos_sum / n_tokens).tolist()


@register("minitron-depth", "depth")
def minitron_depth(model, calib, ratio, **options) -> PruneResult:
    """Remove the contiguous block of layers whose removal costs the least calibration loss."""
    check_options("minitron-depth", options, ("scorer", "batch_size", "n_layers"))
    check_ratio(ratio)
    scorer = options.get("scorer", "loss")
    check(scorer in SCORERS, f"scorer={scorer!r} for minitron-depth; allowed: {', '.join(SCORERS)}")
    batch_size = options.get("batch_size", 8)
    L = len(decoder(model).layers)
    k = L - layers_to_keep(model, ratio, options.get("n_layers"))
    parent_counts = param_counts(model)
    start, losses = minitron_depth_scores(model, calib, k, batch_size)
    removed = list(range(start, start + k))
    pruned = keep_layers(model, [i for i in range(L) if i not in removed])
    info = result_info("minitron-depth", ratio, parent_counts, pruned, removed_layers=removed,
                       kept_layers=L - k, scorer=scorer, block_losses=losses,
                       parent_loss=calibration_loss(model, calib, batch_size),
                       calib={"n_samples": int(calib.shape[0]), "seq_len": int(calib.shape[1])})
    return PruneResult(pruned, None, info)


@register("shortgpt", "depth")
def shortgpt(model, calib, ratio, **options) -> PruneResult:
    """Drop the layers with the lowest Block Influence (not necessarily contiguous)."""
    check_options("shortgpt", options, ("batch_size", "n_layers"))
    check_ratio(ratio)
    L = len(decoder(model).layers)
    keep_n = layers_to_keep(model, ratio, options.get("n_layers"))
    parent_counts = param_counts(model)
    bi = block_influence(model, calib, options.get("batch_size", 8))
    # stable order: among equal influences the later layer goes first (ties are rare with real data)
    order = sorted(range(L), key=lambda i: (bi[i], -i))
    removed = sorted(order[:L - keep_n])
    pruned = keep_layers(model, [i for i in range(L) if i not in removed])
    info = result_info("shortgpt", ratio, parent_counts, pruned, removed_layers=removed, kept_layers=keep_n,
                       block_influence=bi,
                       calib={"n_samples": int(calib.shape[0]), "seq_len": int(calib.shape[1])})
    return PruneResult(pruned, None, info)
