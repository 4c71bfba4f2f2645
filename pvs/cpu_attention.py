"""Causal self-attention for training small heads on a CPU, as a transformers attention implementation.

At the cpu tier's shapes (head dim 8, 64-token sequences) PyTorch's CPU flash-attention kernel took ~40% of
a training step on 2 cores, although attention is ~20% of its FLOPs. The work is a few batched matrix
products per layer, and the slow ones are those with an 8-wide output (P V, dS K, dS^T Q): a BLAS handles
the same product about 4x faster when it is computed transposed, with the 8-wide side as the rows
(bench/bench_attention.py: 0.78 vs 0.20 ms here). So this keeps queries, keys, values and output "feature-major"
(batch, head dim, positions), where each of those products has a long output row, and materialises the
(grouped queries x keys) probabilities once per layer, which a 64-token window makes small (2 MB a layer).
The query heads that share a key/value head are stacked along the positions, so grouped-query attention
needs no copies of the keys.

    import pvs.cpu_attention                          # registers ATTENTION with transformers
    model.set_attn_implementation(pvs.cpu_attention.ATTENTION)

It computes what SDPA with ``is_causal=True`` computes (tests/test_cpu_attention.py: outputs and gradients
to float rounding), and is used only where it is faster: head dim 8 or less and windows of 256 tokens or
less (bench/bench_attention.py, forward + backward, one thread, this machine: 0.62x SDPA's time at head dim
8 and 64 tokens, 0.72x at 8 and 256; 1.15x at head dim 16, 1.2x at 64, 2.2x at 1,024 tokens, where the
probabilities no longer fit in cache). Elsewhere it hands the call to transformers' SDPA. It takes what
training sends (causal, unpadded, no cache, no dropout) and refuses a mask, a cache or dropout with an error;
pvs.train switches a model to it for its training steps only.
"""
from __future__ import annotations

import functools

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION = "pvs_cpu_causal"
MAX_HEAD_DIM = 8
MAX_LENGTH = 256
"""Where this kernel is used; larger heads or windows go to SDPA (bench/bench_attention.py's crossover)."""


@functools.lru_cache(maxsize=8)
def _causal_bias(groups: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """(groups * length, length): 0 where a query may see a key, -inf after it; rows stacked per head."""
    bias = torch.full((length, length), float("-inf"), dtype=dtype).triu(1)
    return bias.repeat(groups, 1)


class _FeatureMajorAttention(torch.autograd.Function):
    """softmax(Q K^T * scale + causal) V on (batch, head dim, positions) operands: qt (n, D, G*T),
    kt and vt (n, D, T); returns the output as (n, D, G*T)."""

    @staticmethod
    def forward(ctx, qt, kt, vt, scale: float):
        groups = qt.shape[2] // kt.shape[2]
        scores = torch.baddbmm(_causal_bias(groups, kt.shape[2], qt.dtype), qt.transpose(1, 2), kt, alpha=scale)
        probs = torch.softmax(scores, dim=-1)  # (n, G*T, T)
        ctx.save_for_backward(qt, kt, vt, probs)
        ctx.scale = scale
        return torch.bmm(vt, probs.transpose(1, 2))  # (V^T P^T): the output, transposed

    @staticmethod
    def backward(ctx, grad_out_t):
        qt, kt, vt, probs = ctx.saved_tensors
        grad_out_t = grad_out_t.contiguous()
        grad_vt = torch.bmm(grad_out_t, probs)  # (dO^T P) = dV^T
        grad_probs = torch.bmm(grad_out_t.transpose(1, 2), vt)  # dO V^T
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_qt = torch.bmm(kt, grad_scores.transpose(1, 2)).mul_(ctx.scale)  # (K^T dS^T) = dQ^T
        grad_kt = torch.bmm(qt, grad_scores).mul_(ctx.scale)  # (Q^T dS) = dK^T
        return grad_qt, grad_kt, grad_vt, None


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of query (B, H, T, D) over key and value (B, KV, T, D), H a multiple of KV (query
    head h reads key/value head h // (H / KV), as transformers' repeat_kv); returns (B, T, H, D)."""
    b, h, t, d = query.shape
    kv = key.shape[1]
    g = h // kv
    qt = query.reshape(b, kv, g, t, d).permute(0, 1, 4, 2, 3).reshape(b * kv, d, g * t)
    kt = key.permute(0, 1, 3, 2).reshape(b * kv, d, t)
    vt = value.permute(0, 1, 3, 2).reshape(b * kv, d, t)
    out_t = _FeatureMajorAttention.apply(qt, kt, vt, scale)
    return out_t.view(b, kv, d, g, t).permute(0, 4, 1, 3, 2).reshape(b, t, h, d)


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      **kwargs):
    """transformers' attention-implementation signature around ``causal_attention``."""
    if attention_mask is not None or dropout or query.shape[2] != key.shape[2]:
        raise RuntimeError(f"attention implementation {ATTENTION!r} computes causal attention over unpadded "
                           f"sequences without a cache or dropout (got a mask: {attention_mask is not None}, "
                           f"dropout {dropout}, {query.shape[2]} queries over {key.shape[2]} keys); "
                           f"set the model back to 'sdpa' for this")
    if query.shape[-1] > MAX_HEAD_DIM or query.shape[2] > MAX_LENGTH or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, None, dropout=0.0, scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return causal_attention(query, key, value, scale), None


AttentionInterface.register(ATTENTION, attention_forward)
