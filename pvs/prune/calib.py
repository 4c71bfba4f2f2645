"""Layer-by-layer calibration pass shared by the activation-aware pruning methods (Wanda, SparseGPT, ...).

The parent's decoder is run one layer at a time over the calibration tokens, as Wanda and SparseGPT do:
the tokens are embedded once; then, for each decoder layer, forward hooks feed the inputs of its linear
modules (q/k/v/o_proj, gate/up/down_proj) into per-linear statistic accumulators, the caller prunes the
layer from those statistics, and the layer is run again WITH its pruned weights to produce the inputs of
the next layer. So every layer is calibrated on what the already-pruned layers below it actually emit.
Within one layer all linears are observed in the same pass, before any of them is pruned (as in the
Wanda and SparseGPT reference code): o_proj and the MLP see the dense attention's outputs.

    def prune_layer(index, layer, stats):            # stats: {"self_attn.q_proj": InputNorms, ...}
        for name, s in stats.items():
            ...                                      # s.col_norms() / s.hessian() -> new weights
    run_layerwise(model, calib, make_stats=lambda name, lin: InputNorms(lin.in_features),
                  prune_layer=prune_layer, micro_batch=8, act_device="cpu")

Memory stays bounded: only one layer's activations [n, T, hidden] live at a time (on ``act_device``,
e.g. the CPU while the layer computes on a GPU), the n samples go through the layer in micro-batches, and
the statistics are running sums updated per micro-batch. ``compute_device`` optionally moves each layer to
an accelerator just for its turn, so a parent held in CPU memory can still be calibrated on one GPU.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

from pvs.errors import PvsError, check


class LinearStats(Protocol):
    """A running statistic of one linear module's inputs, updated once per micro-batch."""

    def add(self, x: torch.Tensor) -> None:
        """Fold in a micro-batch of inputs ``x`` [..., in_features]."""


class InputNorms:
    """Per-input-column squared L2 norms over all calibration tokens (Wanda's ||X_j||_2^2)."""

    def __init__(self, in_features: int, device=None):
        self.sq_sum = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.n_tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.sq_sum.device, torch.float32)
        self.sq_sum += x.square().sum(0)
        self.n_tokens += x.shape[0]

    def col_norms(self) -> torch.Tensor:
        """||X_j||_2 over every calibration token (a scale common to all columns does not change a ranking)."""
        return self.sq_sum.sqrt()


class Hessian:
    """SparseGPT's layer Hessian H = 2/n * sum_t x_t x_t^T over the n calibration tokens, kept in fp32 as a
    running mean (rescaled each micro-batch) so that summing a million tokens does not lose precision."""

    def __init__(self, in_features: int, device=None):
        self.H = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.n_tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.H.device, torch.float32)
        k = x.shape[0]
        if k == 0:
            return
        total = self.n_tokens + k
        self.H *= self.n_tokens / total
        x = x * (2.0 / total) ** 0.5
        self.H.addmm_(x.t(), x)
        self.n_tokens = total

    def hessian(self) -> torch.Tensor:
        return self.H


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama-family causal LM (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise PvsError(f"{type(model).__name__} has no model.layers; layer-wise calibration needs a "
                       f"Llama-family causal LM (e.g. LlamaForCausalLM)")
    return layers


def layer_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside one decoder layer, by name relative to the layer ("self_attn.q_proj", ...)."""
    return {name: mod for name, mod in layer.named_modules() if isinstance(mod, nn.Linear)}


def check_calib(calib, vocab: int) -> torch.Tensor:
    """Validate calibration tokens: a 2-D integer tensor [n_samples, seq_len] of ids below ``vocab``."""
    check(isinstance(calib, torch.Tensor),
          f"calibration data is {type(calib).__name__}; expected a LongTensor [n_samples, seq_len] of token ids")
    check(calib.dim() == 2 and calib.numel() > 0,
          f"calibration tokens have shape {tuple(calib.shape)}; expected a non-empty [n_samples, seq_len]")
    check(not calib.is_floating_point() and not calib.is_complex(),
          f"calibration tokens have dtype {calib.dtype}; expected integer token ids (torch.long)")
    lo, hi = int(calib.min()), int(calib.max())
    check(lo >= 0 and hi < vocab, f"calibration token ids span [{lo}, {hi}]; allowed: [0, {vocab - 1}] "
                                  f"(the model's vocabulary)")
    return calib.long()


def _layer_out(out):
    # decoder layers return a tensor in transformers 5.x and a tuple (hidden, ...) in older versions
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_layerwise(model: nn.Module, calib: torch.Tensor,
                  make_stats: Callable[[str, nn.Linear], LinearStats | None],
                  prune_layer: Callable[[int, nn.Module, dict[str, LinearStats]], None],
                  *, micro_batch: int = 8, act_device=None, compute_device=None) -> torch.Tensor:
    """Calibrate and prune ``model`` layer by layer; returns the last layer's outputs [n, T, hidden]
    (before the final norm), on ``act_device``.

    make_stats(name, linear) gives the accumulator for one linear of the current layer (None: no hook);
    prune_layer(index, layer, stats) then edits the layer in place. ``act_device`` holds the activations
    between layers (default: the embedding's device); ``compute_device`` is where each layer runs (default:
    where it already is; otherwise it is moved there for its turn and back afterwards).
    """
    check(isinstance(micro_batch, int) and micro_batch > 0, f"micro_batch={micro_batch!r} must be a positive integer")
    layers = decoder_layers(model)
    inner = model.model
    calib = check_calib(calib, inner.embed_tokens.num_embeddings)
    n, seq_len = calib.shape
    emb_device = inner.embed_tokens.weight.device
    act_device = torch.device(act_device) if act_device is not None else emb_device
    was_training = model.training
    model.eval()
    try:
        # embed once; a whole layer's activations live on act_device, micro-batches visit the compute device
        acts = torch.empty(n, seq_len, inner.config.hidden_size, dtype=inner.embed_tokens.weight.dtype,
                           device=act_device)
        for s in range(0, n, micro_batch):
            acts[s:s + micro_batch] = inner.embed_tokens(calib[s:s + micro_batch].to(emb_device)).to(act_device)
        position_ids = torch.arange(seq_len, device=emb_device).unsqueeze(0)
        # RoPE cos/sin depend only on positions (and dtype), so one [1, T, head_dim] pair serves every batch
        rope = inner.rotary_emb(acts[:1].to(emb_device), position_ids=position_ids)
        for index, layer in enumerate(layers):
            home = next(layer.parameters()).device
            dev = torch.device(compute_device) if compute_device is not None else home
            layer.to(dev)
            layer_rope = tuple(t.to(dev) for t in rope)
            pos = position_ids.to(dev)

            def forward(write_back: bool) -> None:
                for s in range(0, n, micro_batch):
                    h = acts[s:s + micro_batch].to(dev)
                    mask = _causal_mask(inner.config, h, pos)
                    out = _layer_out(layer(h, attention_mask=mask, position_ids=pos, position_embeddings=layer_rope,
                                           use_cache=False))
                    if write_back:  # samples are independent, so outputs can overwrite their own inputs
                        acts[s:s + micro_batch] = out.to(act_device)

            stats: dict[str, LinearStats] = {}
            hooks = []
            for name, linear in layer_linears(layer).items():
                st = make_stats(name, linear)
                if st is not None:
                    stats[name] = st
                    hooks.append(linear.register_forward_hook(lambda _m, args, _o, st=st: st.add(args[0])))
            try:
                if hooks:
                    forward(write_back=False)
            finally:
                for hk in hooks:
                    hk.remove()
            prune_layer(index, layer, stats)
            del stats
            forward(write_back=True)  # the next layer sees what the PRUNED layer emits
            layer.to(home)
        return acts
    finally:
        model.train(was_training)


def _causal_mask(config, h: torch.Tensor, position_ids: torch.Tensor):
    """The attention mask LlamaModel would build for unpadded sequences (None for sdpa's is_causal path)."""
    from transformers.masking_utils import create_causal_mask

    return create_causal_mask(config=config, inputs_embeds=h, attention_mask=None, cache=None,
                              position_ids=position_ids)


@torch.no_grad()
def forward_with_hooks(model: nn.Module, calib: torch.Tensor, batch_size: int, handles: list) -> None:
    """Run the whole model over ``calib`` in micro-batches (eval mode) so the forward hooks in ``handles``
    see every calibration token; the hooks are removed and the training mode restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for s in range(0, calib.shape[0], batch_size):
            model(input_ids=calib[s:s + batch_size].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
