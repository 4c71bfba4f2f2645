"""Sparse keep-masks: stored explicitly, applied, checked, and the sparse "scratch" baseline.

A sparse model's masks are a dict {parameter name: bool tensor, True = weight kept}. They are saved next
to the pruned checkpoint rather than re-derived from its zeros, because a weight can be zero without being
pruned (and training must keep exactly the pruned ones at zero).

    save_masks(result.masks, run_dir)               # run_dir/sparse_masks.safetensors (atomic)
    masks = load_masks(run_dir)                     # None when the directory has no masks
    apply_masks_(model, masks)                      # zero the pruned weights in place
    check_nm(masks[name], 2, 4)                     # a valid 2:4 pattern?
    reinit_with_masks(model, masks, seed=42)        # same sparsity pattern, random weights (authors' scheme)

On disk (pvs.checkpoint) each mask is bit-packed (8 weights per byte, so an 8B parent's masks take ~0.9 GB,
not 7 GB) and its shape kept in the safetensors metadata.
"""
from __future__ import annotations

import torch
from torch import nn

# the mask files live with the checkpoints they belong to (written and read by pvs.checkpoint)
from pvs.checkpoint import MASKS_FILE, check_masks, load_masks, masks_hash, save_masks  # noqa: F401  (re-exported)
from pvs.config import SPARSE_SCRATCH_INITS
from pvs.errors import check

def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Zero every pruned weight of ``model`` in place (masks named as in ``model.named_parameters()``)."""
    check_masks(masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        check(name in params, f"mask for {name!r} matches no parameter of the model")
        p = params[name]
        check(tuple(p.shape) == tuple(mask.shape),
              f"mask for {name!r} has shape {tuple(mask.shape)}; the parameter has {tuple(p.shape)}")
        with torch.no_grad():
            p.masked_fill_(~mask.to(p.device), 0)
    return model


def check_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """True iff every row of the 2-D keep-mask has at least ``n`` pruned entries in each group of ``m``
    consecutive inputs (the N:M pattern sparse tensor cores accept)."""
    if mask.dim() != 2 or mask.shape[1] % m != 0:
        return False
    pruned = (~mask.bool()).reshape(mask.shape[0], -1, m).sum(-1)
    return bool((pruned >= n).all())


@torch.no_grad()
def reinit_with_masks(model: nn.Module, masks: dict[str, torch.Tensor], seed: int, std: float = 0.02,
                      scheme: str = "authors") -> nn.Module:
    """The sparse "scratch" baseline, in place: same masks, random weights.

    Every nn.Linear weight (attention, MLP and an untied output head) is redrawn and multiplied by its
    mask, so the sparsity pattern is kept exactly and the surviving weights are new; Linear biases (none
    in Llama) are zeroed. The two schemes differ in what else is redrawn:

    - ``"authors"`` (default): the authors' reinit script (LPC pruning/wanda/reinit.py). Linear weights
      from normal(0, std), untruncated (their trunc_normal_ call keeps torch's default +-2 *absolute*
      bounds, 100 std at std 0.02); the parent's input embedding and RMSNorm gains are kept as they are.
      A head tied to the embedding is the embedding, so it is kept too (Llama-3.1-8B's head is untied).
    - ``"fresh"`` (pvs's earlier default, kept as a named variant): everything random, as a dense scratch
      model is. Linear weights from normal(0, std) truncated at +-2 std, the embedding (and a tied head)
      redrawn from normal(0, std), every norm gain reset to 1.

    The difference matters to the paper's sparse claim: the "authors" baseline keeps the parent's
    token representations, so at equal total tokens it starts ahead of a truly random model.
    Draws use a CPU generator seeded with ``seed``, so the result does not depend on the device.
    """
    check_masks(masks)
    check(std > 0, f"reinit std={std!r} must be > 0")
    check(scheme in SPARSE_SCRATCH_INITS, f"sparse scratch init {scheme!r}; allowed: {', '.join(SPARSE_SCRATCH_INITS)}")
    fresh = scheme == "fresh"
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    embeddings = {id(mod.weight) for mod in model.modules() if isinstance(mod, nn.Embedding)}
    done: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in done:  # a tied weight is handled once, under its first owner (the embedding)
                continue
            done.add(id(p))
            if id(p) in embeddings or isinstance(module, nn.Embedding):
                if fresh:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif isinstance(module, nn.Linear) and pname == "weight":
                p.copy_(_linear_draw(p.shape, std, truncate=fresh, gen=gen))
            elif isinstance(module, nn.Linear) and pname == "bias":
                p.zero_()
            elif fresh and pname == "weight" and p.dim() == 1:
                p.fill_(1.0)  # RMSNorm / LayerNorm gain
            elif fresh and pname == "bias" and p.dim() == 1:
                p.zero_()
    return apply_masks_(model, masks)


def _linear_draw(shape, std: float, truncate: bool, gen: torch.Generator) -> torch.Tensor:
    if not truncate:
        return torch.randn(shape, generator=gen) * std
    out = torch.empty(shape)
    nn.init.trunc_normal_(out, 0.0, std, -2 * std, 2 * std, generator=gen)
    return out
