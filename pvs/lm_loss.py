"""The training loss, next-token cross-entropy through the output head, computed a block of rows at a time.

``F.cross_entropy(h @ W.T, y)`` materialises the (tokens x vocab) logits, their log-softmax and the gradient
of both: at the cpu tier three 16 MB tensors a step (2,048 tokens x 2,048 words), each streamed through
memory more than once, about a sixth of a training step on 2 cores. ``linear_cross_entropy`` gives the same
loss and the same gradients, but works through the rows in blocks whose logits stay in cache, and computes
the gradients of the hidden states and of the head during the forward pass (the softmax is at hand then),
so the backward pass only scales them:

    loss = linear_cross_entropy(hidden.flatten(0, 1), model.lm_head.weight, targets.flatten())

The two agree to float rounding (tests/test_lm_loss.py); bench/bench_step_variants.py times both in the
study's step. pvs.train uses it for fp32 training of an unwrapped model whose head has no bias (every CPU run
of the study); bf16 autocast and DDP-wrapped models keep the unfused form.
"""
from __future__ import annotations

import torch

BLOCK_ELEMENTS = 1 << 19
"""Logits per block (2 MB in fp32): 256 rows of a 2,048-word vocabulary, within a core's L2 cache."""


def block_rows(vocab: int) -> int:
    """Rows per block for a vocabulary of ``vocab`` words (at least 64, so the matmuls stay efficient)."""
    return max(64, BLOCK_ELEMENTS // vocab)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int):
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        total = hidden.new_zeros(())
        for lo in range(0, n, rows):
            h, t = hidden[lo:lo + rows], targets[lo:lo + rows, None]
            z = h @ weight.t()  # this block's logits
            top = z.amax(1, keepdim=True)
            picked = z.gather(1, t)
            z.sub_(top).exp_()
            norm = z.sum(1, keepdim=True)
            total += (norm.log() + top - picked).sum()  # -log softmax at the target, per row
            z.div_(norm)  # softmax; minus one-hot at the target: d(row loss)/d(logits)
            z.scatter_add_(1, t, torch.full_like(picked, -1.0))
            torch.mm(z, weight, out=grad_hidden[lo:lo + rows])
            grad_weight.addmm_(z.t(), h)
        ctx.save_for_backward(grad_hidden.div_(n), grad_weight.div_(n))
        return total / n

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` (tokens x vocab logits) against ``targets`` (token ids),
    without holding all the logits: ``hidden`` (tokens, d), ``weight`` (vocab, d), ``targets`` (tokens,)."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} must be (tokens, d) "
                         f"and (vocab, d)")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} must be ({hidden.shape[0]},), one per row of hidden")
    return _LinearCrossEntropy.apply(hidden.contiguous(), weight, targets, block_rows(weight.shape[0]))
