"""Sheared LLaMA: targeted structured pruning by learned hard-concrete masks (Xia et al. 2023), GQA-aware.

The parent's weights and L0 gates (``pvs.prune.l0``) train jointly on the LM loss plus a Lagrangian that
pulls the gates' expected sparsity to a target shape's; then a deterministic mask keeps exactly the
target counts, its soft values are folded into the weights, and ``pvs.prune.surgery`` cuts the rest.

    from pvs.prune import get_method
    res = get_method("sheared-llama").fn(model, calib, 0.5, tokens=2_000_000)
    res.model, res.info["achieved_shape"], res.info["achieved_ratio"]

Gates are multiplicative, applied by forward hooks on a stock ``LlamaForCausalLM``:
- hidden [d]: one global mask over the residual stream, on the embedding output, every attention and
  MLP output and every RMSNorm output; RMSNorms average over the surviving channels only, so the masked
  model equals the cut one (the authors' choice);
- layer [L]: on a layer's attention and MLP outputs (a zero layer is the identity and is dropped);
- head [L, n_kv]: on the attention context of every query head of a KV group before o_proj. Heads are
  pruned in whole GQA groups (a KV head with its n_heads / n_kv query heads), so the target must keep the
  parent's group size and every pruned model is valid GQA;
- intermediate [L, ffn]: on the SwiGLU activations before down_proj.

Recipe defaults are the authors' LLM-Shearing scripts: AdamW (0.9, 0.95), no weight decay, lr 1e-4 for
weights and 1.0 for the gates and (by gradient ascent) the Lagrange multipliers, cosine schedule to 0.1x
with 10% warmup, the target sparsity ramped linearly from 0 over the same 10% (the paper's authors run
3200 steps with t_warmup=320ba and lagrangian_warmup_steps=10240/32=320ba), gradient clipping 1.0.

Mask learning must end with the gates' expected sparsity at the target: the final cut keeps exactly the
target counts whatever the gates learned, so a too-short run would otherwise pass silently. A run that
ends more than ``sparsity_tol`` (0.02) away raises ``MaskLearningNotConverged``, a one-line PvsError
naming the budget to raise. The Lagrangian oscillates before it settles: on small models that takes a
few hundred steps whatever the token budget (``mask_learning_steps`` sizes a study's run with a minimum).
The released code initialises log_alpha to 5 (then clamped to log 100: every gate starts almost surely
open) although its droprate_init line says 0.5 (log_alpha 0); ``init_log_alpha=0.0`` gives the latter.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from pvs.errors import PvsError, check
from pvs.model import param_counts, shape_of
from pvs.shape import ModelShape, flops_per_token, shape_param_counts
from pvs.prune.l0 import MODULES, L0Masks
from pvs.prune.registry import BudgetTooSmall, Calibration, PruneResult, check_ratio, get_method, register
from pvs.prune.shapes import check_reachable, study_width_target
from pvs.prune.shapes import target_shape as derive_target
from pvs.prune.surgery import keep_layers, layer_widths, prune_width, result_info


# target shape ---------------------------------------------------------------------------------
def resolve_target(parent: ModelShape, ratio: float, target_shape=None) -> ModelShape:
    """The target as a validated ModelShape: given (ModelShape or dict of changed fields) or derived from
    ``ratio`` by ``pvs.prune.shapes.target_shape(parent, ratio, "width")``. Bad targets raise PvsError."""
    if target_shape is None:
        target = derive_target(parent, ratio, "width")
    elif isinstance(target_shape, ModelShape):
        target = target_shape
    elif isinstance(target_shape, dict):
        fields = {f.name for f in dataclasses.fields(ModelShape)}
        bad = sorted(set(target_shape) - fields)
        check(not bad, f"sheared-llama target_shape fields {bad}; allowed: {sorted(fields)}")
        target = dataclasses.replace(parent, **{"head_dim": parent.attn_head_dim, **target_shape})
    else:
        raise PvsError(f"sheared-llama target_shape={target_shape!r}; allowed: a ModelShape, a dict of its fields or None")
    target = dataclasses.replace(target, head_dim=target.head_dim or parent.attn_head_dim)
    check_reachable(parent, target)
    group = parent.n_heads // parent.n_kv_heads
    check(target.n_heads == target.n_kv_heads * group,
          f"sheared-llama target n_heads={target.n_heads} with n_kv_heads={target.n_kv_heads}; heads are pruned in "
          f"whole GQA groups of {group}, so allowed: n_heads = {group} x n_kv_heads")
    check(target.tied == parent.tied, f"sheared-llama target tied={target.tied}; allowed: the parent's {parent.tied}")
    return target


# gating hooks ---------------------------------------------------------------------------------
def _masked_rms_norm(x: torch.Tensor, norm, hidden_z: torch.Tensor) -> torch.Tensor:
    """RMSNorm averaged over the surviving channels (x is already 0 on the others), gated by hidden_z."""
    kept = torch.count_nonzero(hidden_z.detach()).clamp(min=1)
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) / kept + norm.variance_epsilon)
    return norm.weight * y.to(x.dtype) * hidden_z


class Gates:
    """Forward hooks that multiply a LlamaForCausalLM by the gates in ``self.z`` (set before each forward)."""

    def __init__(self, model, shape: ModelShape):
        self.model, self.shape, self.z = model, shape, None
        self.per_head = (shape.n_heads // shape.n_kv_heads) * shape.attn_head_dim  # o_proj inputs per group

    def _hooks(self):
        inner = self.model.model
        yield inner.embed_tokens.register_forward_hook(lambda m, a, out: out * self.z["hidden"])
        norms = [inner.norm] + [n for layer in inner.layers for n in (layer.input_layernorm,
                                                                     layer.post_attention_layernorm)]
        for norm in norms:
            yield norm.register_forward_hook(lambda m, a, out: _masked_rms_norm(a[0], m, self.z["hidden"]))
        for i, layer in enumerate(inner.layers):
            o_proj, down = layer.self_attn.o_proj, layer.mlp.down_proj
            yield o_proj.register_forward_pre_hook(
                lambda m, a, i=i: (a[0] * self.z["head"][i].repeat_interleave(self.per_head),))
            yield down.register_forward_pre_hook(lambda m, a, i=i: (a[0] * self.z["intermediate"][i],))
            for proj in (o_proj, down):
                yield proj.register_forward_hook(lambda m, a, out, i=i: out * (self.z["layer"][i] * self.z["hidden"]))

    @contextmanager
    def installed(self):
        handles = list(self._hooks())
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


# fold the final gates into the weights and cut ------------------------------------------------
def fold_and_cut(model, shape: ModelShape, z: dict[str, torch.Tensor]):
    """Scale ``model``'s weights in place by the deterministic gates ``z`` (zeros = pruned units), then
    return a new model without the pruned units (``pvs.prune.surgery``) that computes what the gated
    model computed."""
    group = shape.n_heads // shape.n_kv_heads
    inner = model.model
    with torch.no_grad():
        zh = z["hidden"]
        for i, layer in enumerate(inner.layers):
            zl = z["layer"][i]
            head = z["head"][i].repeat_interleave(group * shape.attn_head_dim)
            layer.self_attn.o_proj.weight.mul_(zh[:, None] * zl * head[None, :])
            layer.mlp.down_proj.weight.mul_(zh[:, None] * zl * z["intermediate"][i][None, :])
            layer.input_layernorm.weight.mul_(zh)
            layer.post_attention_layernorm.weight.mul_(zh)
        inner.norm.weight.mul_(zh)
        # with tied embeddings zh is 0/1 here, so this only zeroes columns that are cut anyway
        inner.embed_tokens.weight.mul_(zh[None, :])

    layers = torch.nonzero(z["layer"]).flatten()
    kv_keep = [torch.nonzero(z["head"][i]).flatten() for i in layers.tolist()]
    heads_keep = [(g[:, None] * group + torch.arange(group, device=g.device)).flatten() for g in kv_keep]
    ffn_keep = [torch.nonzero(z["intermediate"][i]).flatten() for i in layers.tolist()]
    hidden_keep = torch.nonzero(zh).flatten()
    if len(layers) < shape.n_layers:
        model = keep_layers(model, layers)
    return prune_width(model, hidden_keep=hidden_keep, heads_keep=heads_keep, kv_heads_keep=kv_keep,
                       ffn_keep=ffn_keep)


# budget and the convergence check -------------------------------------------------------------
def mask_learning_steps(token_share: float, retrain_tokens: int, batch_tokens: int, min_steps: int) -> int:
    """Steps of a study's mask learning: enough batches of ``batch_tokens`` for ``token_share`` x N
    tokens, but never fewer than ``min_steps``, because the Lagrangian needs a few hundred steps to
    settle however small N is. The run reads steps x batch_tokens tokens."""
    check(token_share >= 0, f"study.sheared_tokens_frac={token_share!r}; allowed: >= 0")
    check(isinstance(min_steps, int) and min_steps >= 1, f"study.sheared_min_steps={min_steps!r}; allowed: >= 1")
    check(batch_tokens > 0, f"sheared-llama batch of {batch_tokens} tokens; allowed: > 0")
    return max(min_steps, math.ceil(token_share * retrain_tokens / batch_tokens))


class MaskLearningNotConverged(BudgetTooSmall):
    """Mask learning ended with the expected sparsity farther than the tolerance from the target.
    ``message(hint)`` rewords it for a caller whose budget settings have other names (pvs.study)."""

    def __init__(self, expected: float, target: float, tol: float, steps: int, hint: str):
        self.expected, self.target, self.tol, self.steps = expected, target, tol, steps
        super().__init__(self.message(hint))

    def message(self, hint: str) -> str:
        return (f"sheared-llama: mask learning ended at expected sparsity {self.expected:.3f}, target "
                f"{self.target:.3f} (|diff| > {self.tol:g}) after {self.steps} steps; raise {hint}")


def _check_converged(masks: L0Masks, tol: float | None, steps: int) -> None:
    """Raise unless the gates' expected sparsity (1 - expected kept non-embedding parameters / the
    parent's) ended within ``tol`` of the target shape's (``tol=None`` skips the check)."""
    if tol is None:
        return
    expected, target = masks.expected_sparsity(), masks.target_total_sparsity()
    if not abs(expected - target) <= tol:  # written so that a NaN sparsity fails too
        raise MaskLearningNotConverged(expected, target, tol, steps, "steps= or tokens=")


# training -------------------------------------------------------------------------------------
def _calib_batches(calib: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Endless batches over ``calib``, reshuffled (seeded) every pass."""
    while True:
        order = torch.randperm(calib.shape[0], generator=generator)
        for start in range(0, len(order), batch_size):
            yield calib[order[start:start + batch_size]]


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warmup then cosine decay to 0.1x (the authors' cosine_with_warmup, alpha_f 0.1)."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _check_batch(batch, vocab: int) -> torch.Tensor:
    check(isinstance(batch, torch.Tensor) and batch.dim() == 2 and not batch.is_floating_point(),
          f"sheared-llama data batch {type(batch).__name__} {getattr(batch, 'shape', '')}; allowed: LongTensor [b, T]")
    check(batch.numel() > 0 and int(batch.min()) >= 0 and int(batch.max()) < vocab,
          f"sheared-llama data batch has token ids outside [0, {vocab})")
    return batch.long()


def _plan_steps(tokens, steps, tokens_per_batch: int, calib_batches: int | None) -> int:
    check(tokens is None or steps is None, "sheared-llama: give tokens or steps, not both")
    if steps is not None:
        check(isinstance(steps, int) and steps > 0, f"sheared-llama steps={steps!r}; allowed: a positive integer")
        return steps
    if tokens is not None:
        check(tokens > 0, f"sheared-llama tokens={tokens!r}; allowed: a positive number")
        return max(1, math.ceil(tokens / tokens_per_batch))
    check(calib_batches is not None, "sheared-llama with data= needs a budget: tokens= or steps=")
    return calib_batches  # one pass over the calibration set


def _optimizer(model, masks: L0Masks, train_weights: bool, lr: float, lag_lr: float):
    """AdamW over three groups as the authors build it: weights (lr), gates (lag_lr) and the Lagrange
    multipliers (lag_lr, maximised: gradient ascent)."""
    weights = [p for p in model.parameters() if p.requires_grad] if train_weights else []
    groups = [{"params": list(masks.log_alpha.values()), "lr": lag_lr},
              {"params": list(masks.lambdas.values()), "lr": lag_lr, "maximize": True}]
    if weights:
        groups.insert(0, {"params": weights, "lr": lr})
    return torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0), weights


def _train(model, parent: ModelShape, masks: L0Masks, batches, total_steps: int, warmup: int, *, train_weights,
           lr, lag_lr, constraint, grad_clip, seed, log_every) -> tuple[list[dict], int, int]:
    """Joint training of weights and gates on LM loss + Lagrangian. Returns (history, steps, tokens)."""
    device = next(model.parameters()).device
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    opt, weights = _optimizer(model, masks, train_weights, lr, lag_lr)
    for p in model.parameters():
        p.requires_grad_(any(p is w for w in weights))
    base_lrs = [g["lr"] for g in opt.param_groups]
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")  # authors: amp_bf16
    gates, history, row, tokens, done = Gates(model, parent), [], None, 0, 0
    was_training = model.training
    model.train()
    try:
        with gates.installed():
            for step in range(total_steps):
                batch = next(batches, None)
                if batch is None:
                    break
                batch = _check_batch(batch, parent.vocab).to(device)
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * _schedule(step, total_steps, warmup)
                gates.z = masks.sample(noise)
                with amp:
                    logits = model(input_ids=batch, use_cache=False).logits
                lm_loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                          batch[:, 1:].reshape(-1))
                lag_loss, stats = masks.lagrangian(min(1.0, step / warmup), constraint)
                opt.zero_grad(set_to_none=True)
                (lm_loss + lag_loss).backward()
                if weights and grad_clip:
                    torch.nn.utils.clip_grad_norm_(weights, grad_clip)
                opt.step()
                masks.clamp_()
                tokens, done = tokens + batch.numel(), step + 1
                row = {"step": step, "lm_loss": float(lm_loss.detach()), "lag_loss": float(lag_loss.detach()), **stats}
                if step == 0 or (log_every and step % log_every == 0):
                    history.append(row)
    finally:
        for p in model.parameters():
            p.requires_grad_(trainable[id(p)])
        model.train(was_training)
    if row is not None and history[-1]["step"] != row["step"]:
        history.append(row)
    return history, done, tokens


def study_budget(cfg) -> tuple[int, int, int]:
    """(steps, b, T) of a study's mask learning: batches of b sequences of T tokens (the authors' 32 x 4096
    under study.calibration = 'authors', else train.batch_size x study.calib_seq_len) for
    study.sheared_tokens_frac of N, but at least study.sheared_min_steps steps."""
    b, T = get_method("sheared-llama").calibration(cfg)
    steps = mask_learning_steps(cfg.study.sheared_tokens_frac, cfg.budget.retrain_tokens, b * T,
                                cfg.study.sheared_min_steps)
    return steps, b, T


def _study_options(cfg, ratio: float) -> dict:
    steps, b, _ = study_budget(cfg)
    return {"steps": steps, "batch_size": b, "target_shape": study_width_target(cfg, ratio)}


def _budget_hint(cfg) -> str:
    return (f"study.sheared_min_steps (now {cfg.study.sheared_min_steps}) or "
            f"study.sheared_tokens_frac (now {cfg.study.sheared_tokens_frac:g})")


def _cost(cfg, parent, kept, samples: int, seq_len: int) -> tuple[float, str]:
    """Mask learning trains the parent (a full training step's FLOPs per token)."""
    steps, b, T = study_budget(cfg)
    return (flops_per_token(parent, T) * steps * b * T,
            f"mask learning: {steps} steps, {steps * b * T:,} tokens (parent training FLOPs)")


@register("sheared-llama", "width", trains=True, study_options=_study_options, budget_hint=_budget_hint, cost=_cost,
          # the authors' mask learning (Llama-2-7B): 3200 steps of 32 x 4096 RedPajama tokens = 0.42B
          authors=Calibration("RedPajama (mask learning, batches of 32)", 32, 4096,
                              "LLM-Shearing llmshearing/scripts/prune_llama2-*.sh"),
          scorer="learned hard-concrete L0 masks (layers, heads, FFN, hidden) with a Lagrangian to the target")
def sheared_llama(model, calib, ratio, target_shape=None, tokens=None, steps=None, lr: float = 1e-4,
                  lag_lr: float = 1.0, warmup_frac: float = 0.1, data=None, seed: int = 0, batch_size: int = 8,
                  train_weights: bool = True, modules=MODULES, init_log_alpha: float = 5.0,
                  constraint: str = "module", grad_clip: float = 1.0, log_every: int = 0,
                  sparsity_tol: float | None = 0.02) -> PruneResult:
    """Prune ``model`` to ``target_shape`` (ModelShape or dict of changed fields; default derived from
    ``ratio``) by Sheared-LLaMA mask learning on ``data`` (iterable of [b, T] LongTensors; default:
    ``calib`` in seeded shuffled batches of ``batch_size``) for ``tokens`` or ``steps`` (default: one pass
    over ``calib``). ``train_weights=False`` learns the masks only. ``model`` itself is trained and has the
    final gates folded in; the returned model is a new, smaller one. Raises ``MaskLearningNotConverged``
    when the expected sparsity ends more than ``sparsity_tol`` from the target (None: no check).
    ``info['mask_learning_tokens']`` counts the tokens mask learning read (training tokens of the arm)."""
    check_ratio(ratio)
    check(sparsity_tol is None or sparsity_tol >= 0,
          f"sheared-llama sparsity_tol={sparsity_tol!r}; allowed: >= 0 or None")
    check(0 <= warmup_frac <= 1, f"sheared-llama warmup_frac={warmup_frac!r}; allowed: 0..1")
    check(isinstance(batch_size, int) and batch_size > 0, f"sheared-llama batch_size={batch_size!r}; allowed: >= 1")
    parent = shape_of(model.config)
    uneven = [i for i, w in enumerate(layer_widths(model)) if (w["heads"], w["kv_heads"], w["ffn"]) !=
              (parent.n_heads, parent.n_kv_heads, parent.ffn) or w["o_proj_bias"] or w["down_proj_bias"]]
    check(not uneven, f"sheared-llama needs a uniform Llama parent; layers {uneven[:8]} differ in width or have "
                      f"o_proj/down_proj biases (allowed: every layer as the config says, no output biases)")
    target = resolve_target(parent, ratio, target_shape)
    parent_counts = param_counts(model)

    if data is None:
        check(calib is not None, "sheared-llama needs calib or data (token batches); got neither")
        calib = _check_batch(calib, parent.vocab)
        n_calib_batches = math.ceil(calib.shape[0] / batch_size)
        batches = _calib_batches(calib, batch_size, torch.Generator().manual_seed(seed))
    else:
        n_calib_batches, batches = None, iter(data)
    first = next(batches, None)
    check(first is not None, "sheared-llama data= yielded no batches")
    first = _check_batch(first, parent.vocab)
    total_steps = _plan_steps(tokens, steps, first.numel(), n_calib_batches)
    warmup = max(1, round(warmup_frac * total_steps))

    masks = L0Masks(parent, target, modules, init_log_alpha=init_log_alpha, seed=seed).to(next(model.parameters()).device)
    history, done, seen = _train(model, parent, masks, itertools.chain([first], batches), total_steps, warmup,
                                 train_weights=train_weights, lr=lr, lag_lr=lag_lr, constraint=constraint,
                                 grad_clip=grad_clip, seed=seed, log_every=log_every)
    _check_converged(masks, sparsity_tol, done)
    final_sparsity = masks.expected_sparsity()
    z = masks.deterministic(binary_hidden=parent.tied)
    pruned = fold_and_cut(model, parent, z)
    kept = torch.nonzero(z["layer"]).flatten().tolist()
    info = result_info(
        "sheared-llama", ratio, parent_counts, pruned,
        target_shape=dataclasses.asdict(target), achieved_shape=dataclasses.asdict(shape_of(pruned.config)),
        target_ratio=1 - shape_param_counts(target)["non_embedding"] / shape_param_counts(parent)["non_embedding"],
        kept_layers=kept, kept_kv_groups=[torch.nonzero(z["head"][i]).flatten().tolist() for i in kept],
        steps=done, tokens=seen, planned_steps=total_steps, mask_learning_tokens=seen,
        lagrangian={"constraint": constraint, "target_sparsity": masks.target_total_sparsity(),
                    "expected_sparsity_start": history[0]["expected_sparsity"] if history else None,
                    "expected_sparsity_end": final_sparsity,
                    "target_sparsity_end": history[-1]["target_sparsity"] if history else None,
                    "lm_loss_start": history[0]["lm_loss"] if history else None,
                    "lm_loss_end": history[-1]["lm_loss"] if history else None,
                    "lambdas": masks.lambda_values(), "history": history},
        options={"lr": lr, "lag_lr": lag_lr, "warmup_frac": warmup_frac, "batch_size": batch_size, "seed": seed,
                 "train_weights": train_weights, "modules": list(masks.modules_on), "init_log_alpha": init_log_alpha,
                 "grad_clip": grad_clip, "constraint": constraint, "sparsity_tol": sparsity_tol})
    return PruneResult(model=pruned, masks=None, info=info)
