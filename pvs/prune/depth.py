"""Depth pruning: remove whole decoder layers. Two methods, as in the authors' code
(zlab-princeton/llm-pruning-collection).

- ``minitron-depth``: remove ONE contiguous block of k layers. For every start index i, the parent minus
  layers [i, i+k) is scored, and one block is removed. Option ``scorer``:
  - ``"loss"`` (default): calibration LM loss; the block whose removal gives the lowest loss goes. This is
    the authors' perplexity scorer (they rank by |ppl - unpruned ppl|; a pruned model's perplexity is above
    the parent's in practice, so that is the lowest perplexity, and perplexity = exp(loss) ranks like the
    loss). The authors use it for their 31-layer run.
  - ``"task"``: a task's accuracy, as the authors' 16-layer run (WinoGrande 5-shot through lm-eval). The
    caller passes ``task_score=callable(model) -> float``; it is called once on the parent and once per
    candidate, each time on the parent seen with only the kept layers (shared, not copied; KV cache off,
    eval mode, no grad). As the authors' rule, the block whose score is NEAREST the parent's score goes
    (|score - parent score|, ties to the earliest start): unlike a loss, an accuracy may rise above the
    parent's, and the authors do not reward that. depth does not evaluate tasks itself (pvs.downstream
    sits above pvs.prune): a higher module builds ``task_score`` (e.g. WinoGrande through
    ``pvs.downstream.evaluate_downstream``) and passes it as an option. ``info["task"]`` records the
    callable's ``name`` attribute (else its ``__name__``).
- ``shortgpt``: Block Influence BI_l = 1 - mean over calibration tokens of cos(x_in, x_out) of layer l;
  the k least influential layers are dropped, wherever they are.

k follows from the ratio: the target keeps round(L * (1 - ratio)) layers (at least 1), because every layer
holds the same number of non-embedding parameters; ``info["achieved_ratio"]`` reports what that removes
(within half a layer of the request, see ``pvs.prune.shapes``). Option ``n_layers`` sets the number of
layers kept directly (e.g. from a shape table). Both methods return a new model (``keep_layers``).

    result = get_method("minitron-depth").fn(model, calib, 0.5)
    result.info["removed_layers"], result.info["achieved_ratio"]
    get_method("minitron-depth").fn(model, calib, 0.5, scorer="task", task_score=winogrande_accuracy)
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from pvs.errors import check
from pvs.model import param_counts
from pvs.shape import ModelShape, flops_per_token
from pvs.prune.calib import check_calib
from pvs.prune.registry import (MINITRON_CALIBRATION, PruneResult, check_batch_size, check_options, check_ratio,
                                register)
from pvs.prune.shapes import depth_target
from pvs.prune.surgery import decoder, keep_layers, layers_view, result_info

SCORERS = ("loss", "task")
"""Block scorers of minitron-depth (option ``scorer``); see the module docstring."""


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


@contextmanager
def _task_view(model, keep: list[int]):
    """The parent with only layers ``keep`` (``layers_view``), in eval mode, without KV cache or grad, for
    an external scorer: the view's layers keep their old layer_idx, so a cache would be built wrong."""
    was_training, use_cache = model.training, getattr(model.config, "use_cache", None)
    model.eval()
    model.config.use_cache = False
    try:
        with layers_view(model, keep), torch.no_grad():
            yield model
    finally:
        model.config.use_cache = use_cache
        model.train(was_training)


def _task_value(task_score, model, what: str) -> float:
    """``task_score(model)`` as a float; PvsError unless it is a finite real number."""
    value = task_score(model)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    check(ok, f"task_score returned {value!r} for {what}; expected a finite number (the task's accuracy)")
    return float(value)


def task_name(task_score) -> str:
    """How records name a task scorer: its ``name`` attribute, else its ``__name__``, else its type."""
    return str(getattr(task_score, "name", None) or getattr(task_score, "__name__", None)
               or type(task_score).__name__)


def check_task_scorer(scorer: str, task_score) -> None:
    """``task_score`` must be a callable exactly when ``scorer="task"`` (never silently ignored)."""
    if scorer == "task":
        check(callable(task_score), f"scorer='task' needs task_score=callable(model) -> accuracy; "
                                    f"got task_score={task_score!r}")
    else:
        check(task_score is None, f"task_score is used only with scorer='task'; got scorer={scorer!r}")


def minitron_depth_task_scores(model, task_score, k: int) -> tuple[int, list[float], float]:
    """Task score of the parent minus each contiguous block of k layers; returns (chosen start, scores
    indexed by start, parent score). Chosen: the score nearest the parent's, ties to the earliest start
    (the authors' rule)."""
    L = len(decoder(model).layers)
    check(1 <= k < L, f"block of k={k} layers to remove; allowed: 1..{L - 1}")
    with _task_view(model, list(range(L))):
        parent_score = _task_value(task_score, model, "the parent")
    scores = []
    for start in range(L - k + 1):
        with _task_view(model, [i for i in range(L) if not start <= i < start + k]):
            scores.append(_task_value(task_score, model, f"layers {start}..{start + k - 1} removed"))
    best = min(range(len(scores)), key=lambda i: (abs(scores[i] - parent_score), i))
    return best, scores, parent_score


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


def _minitron_depth_cost(cfg, parent, kept, samples: int, seq_len: int) -> tuple[float, str]:
    """Every start index of the removed block is scored: n_kept + 1 forwards of the pruned depth, plus the
    parent's (a forward is 1/3 of a training step's FLOPs)."""
    per_token = ((kept.n_layers + 1) * flops_per_token(kept, seq_len) + flops_per_token(parent, seq_len)) / 3
    return per_token * samples * seq_len, (f"{kept.n_layers + 1} candidate blocks scored on "
                                           f"{samples * seq_len:,} calibration tokens")


@register("minitron-depth", "depth", authors=MINITRON_CALIBRATION, cost=_minitron_depth_cost,
          scorer="calibration LM loss with each contiguous block removed (scorer='task': a task's accuracy)")
def minitron_depth(model, calib, ratio, **options) -> PruneResult:
    """Remove the contiguous block of layers whose removal costs the least: lowest calibration loss
    (``scorer="loss"``, default) or task score nearest the parent's (``scorer="task"`` with ``task_score``)."""
    check_options("minitron-depth", options, ("scorer", "batch_size", "n_layers", "task_score"))
    check_ratio(ratio)
    scorer = options.get("scorer", "loss")
    check(scorer in SCORERS, f"scorer={scorer!r} for minitron-depth; allowed: {', '.join(SCORERS)}")
    task_score = options.get("task_score")
    check_task_scorer(scorer, task_score)
    batch_size = options.get("batch_size", 8)
    L = len(decoder(model).layers)
    k = L - layers_to_keep(model, ratio, options.get("n_layers"))
    parent_counts = param_counts(model)
    if scorer == "loss":
        start, losses = minitron_depth_scores(model, calib, k, batch_size)
        scored = {"block_losses": losses, "parent_loss": calibration_loss(model, calib, batch_size)}
    else:
        start, scores, parent_score = minitron_depth_task_scores(model, task_score, k)
        scored = {"task": task_name(task_score), "block_scores": scores, "parent_score": parent_score,
                  "selection": "block score nearest the parent's (authors' rule)"}
    removed = list(range(start, start + k))
    pruned = keep_layers(model, [i for i in range(L) if i not in removed])
    info = result_info("minitron-depth", ratio, parent_counts, pruned, removed_layers=removed,
                       kept_layers=L - k, scorer=scorer, **scored,
                       calib={"n_samples": int(calib.shape[0]), "seq_len": int(calib.shape[1])})
    return PruneResult(pruned, None, info)


@register("shortgpt", "depth", authors=MINITRON_CALIBRATION, scorer="Block Influence 1 - cos(x_in, x_out) per layer")
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
