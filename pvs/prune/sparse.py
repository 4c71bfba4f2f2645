"""Sparse pruning: magnitude, Wanda and SparseGPT, unstructured or N:M (2:4, 4:8).

Each method zeroes a fraction ``ratio`` of every nn.Linear weight inside the decoder layers (attention
q/k/v/o and MLP gate/up/down); the embedding, the norms and the output head stay dense. The model is
edited in place and returned with an explicit bool keep-mask per pruned weight, which retraining must
keep (the zeros are not re-derived from the weights).

    from pvs.prune import get_method
    result = get_method("sparsegpt").fn(model, calib, 0.5, pattern="2:4")
    result.masks["model.layers.0.self_attn.q_proj.weight"]    # bool, True = weight kept

- ``magnitude`` (data-free): prune the smallest |W| of each matrix; with N:M, the N smallest of every M
  consecutive inputs of a row.
- ``wanda``: score |W_ij| * ||X_j||_2 (X: the layer's calibration inputs), compared within each output row
  (or each row-group of M for N:M); weights are not updated.
- ``sparsegpt``: Optimal Brain Surgeon with the layer Hessian H = 2/n sum x x^T: masks chosen block-wise
  (128 columns) by w^2 / [U]_ii^2 (U: upper Cholesky factor of H^-1), each pruned weight's error pushed
  onto the not-yet-processed columns of its row, lazily per block.

Wanda and SparseGPT calibrate layer by layer (``pvs.prune.calib``): layer l is pruned on the inputs the
already-pruned layers 0..l-1 produce. N:M means N zeros in every M consecutive inputs of a row, so it
fixes the sparsity at N/M; any other ratio is refused.

The ratio is the per-matrix sparsity. Because norms stay dense, the fraction of the parent's
non-embedding parameters removed (``info["achieved_ratio"]``) is a hair below it (e.g. 0.49996 for
Llama-3.1-8B at 0.5); ``info["matrix_sparsity"]`` is the fraction of prunable weights removed.

Counts are exact: unstructured pruning removes round(ratio * size) weights (per matrix for magnitude and
SparseGPT, per row for Wanda), ties broken by position. Differences from the reference implementations,
decided here: SparseGPT's "dead" inputs (H_ii = 0, never active on the calibration data) are pruned first,
within the ratio, instead of being zeroed on top of it; blocks get exact cumulative counts instead of a
quantile threshold (which removes one extra weight per block and all ties).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from pvs.errors import PvsError, check
from pvs.model import param_counts
from pvs.prune.calib import Hessian, InputNorms, check_calib, decoder_layers, layer_linears, run_layerwise
from pvs.prune.registry import SPARSE_PATTERNS, Calibration, PruneResult, check_ratio, register

SPARSE_METHODS = ("magnitude", "wanda", "sparsegpt")


def parse_pattern(pattern: str, ratio: float) -> tuple[int, int] | None:
    """None for 'unstructured', (N, M) for 'N:M'; refuses a pattern that cannot give ``ratio``."""
    check(pattern in SPARSE_PATTERNS, f"sparse pattern {pattern!r}; allowed: {', '.join(SPARSE_PATTERNS)}")
    if pattern == "unstructured":
        return None
    n, m = (int(v) for v in pattern.split(":"))
    check(abs(ratio - n / m) < 1e-9, f"pattern {pattern} prunes exactly {n / m:g} of the weights; got ratio {ratio:g}")
    return n, m


def n_pruned(size: int, sparsity: float) -> int:
    """How many of ``size`` weights a sparsity removes (nearest integer)."""
    return int(round(size * sparsity))


def _prune_lowest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask over the last dim of ``score``: True at the k lowest entries (ties by position)."""
    prune = torch.zeros_like(score, dtype=torch.bool)
    if k > 0:
        idx = torch.sort(score, dim=-1, stable=True).indices[..., :k]
        prune.scatter_(-1, idx, True)
    return prune


def matrix_keep(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask removing the lowest-scoring round(sparsity * numel) entries of the whole matrix."""
    return ~_prune_lowest(score.reshape(-1), n_pruned(score.numel(), sparsity)).reshape(score.shape)


def row_keep(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask removing the lowest-scoring round(sparsity * cols) entries of every row."""
    return ~_prune_lowest(score, n_pruned(score.shape[1], sparsity))


def nm_keep(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask removing the n lowest-scoring entries of every m consecutive columns of each row."""
    rows, cols = score.shape
    check(cols % m == 0, f"a weight with {cols} input columns cannot be pruned {n}:{m}; "
                         f"N:M needs the input size divisible by {m}")
    return ~_prune_lowest(score.reshape(rows, cols // m, m), n).reshape(rows, cols)


def magnitude_keep(W: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Magnitude pruning: |W| compared over the whole matrix (unstructured) or per row-group of M."""
    score = W.detach().float().abs()
    return nm_keep(score, *nm) if nm else matrix_keep(score, sparsity)


def wanda_keep(W: torch.Tensor, col_norms: torch.Tensor, sparsity: float,
               nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Wanda: score |W_ij| * ||X_j||_2 compared within each output row (or row-group of M)."""
    score = W.detach().float().abs() * col_norms.to(W.device, torch.float32).unsqueeze(0)
    return nm_keep(score, *nm) if nm else row_keep(score, sparsity)


@contextmanager
def _exact_fp32():
    # SparseGPT's Cholesky factors and error propagation are sensitive: no TF32 matmuls inside
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None,
                    blocksize: int = 128, percdamp: float = 0.01, name: str = "weight"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one weight [out, in] with its input Hessian H [in, in]: returns (new weight in W's
    dtype, keep-mask). Pruned entries of the new weight are exactly zero."""
    rows, cols = W.shape
    if nm:
        check(blocksize % nm[1] == 0, f"sparsegpt blocksize={blocksize} must be a multiple of M={nm[1]} for "
                                      f"pattern {nm[0]}:{nm[1]}")
        check(cols % nm[1] == 0, f"{name} has {cols} input columns; pattern {nm[0]}:{nm[1]} needs a multiple of {nm[1]}")
    with _exact_fp32():
        W1 = W.detach().float().clone()
        H = H.to(W1.device, torch.float32).clone()
        # an input never active in calibration has H_ii = 0: give it unit curvature (it then couples to no
        # other column, so pruning it moves nothing else) and prune it before any live weight
        dead = torch.diagonal(H) == 0
        H[dead, dead] = 1.0
        diag = torch.arange(cols, device=H.device)
        H[diag, diag] += percdamp * torch.diagonal(H).mean()
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) != 0:
            raise PvsError(f"sparsegpt: Hessian of {name} is not positive definite after dampening "
                           f"percdamp={percdamp}; raise percdamp (e.g. 0.1) or use more calibration tokens")
        U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
        prune = torch.zeros(rows, cols, dtype=torch.bool, device=W1.device)
        for i1 in range(0, cols, blocksize):
            i2 = min(i1 + blocksize, cols)
            Wb = W1[:, i1:i2].clone()
            Ub = U[i1:i2, i1:i2]
            ub_diag = torch.diagonal(Ub)
            errs = torch.zeros_like(Wb)
            if not nm:  # exact cumulative counts: the whole matrix ends with round(sparsity * numel) pruned
                k = min(n_pruned(rows * i2, sparsity) - n_pruned(rows * i1, sparsity), rows * (i2 - i1))
                sal = Wb.square() / ub_diag.square().unsqueeze(0)
                sal[:, dead[i1:i2]] = 0.0
                prune[:, i1:i2] = _prune_lowest(sal.reshape(-1), k).reshape(rows, i2 - i1)
            for j in range(i2 - i1):
                if nm and j % nm[1] == 0:  # choose this row-group's N zeros from the weights as updated so far
                    g = slice(j, j + nm[1])
                    sal = Wb[:, g].square() / ub_diag[g].square().unsqueeze(0)
                    sal[:, dead[i1:i2][g]] = 0.0
                    prune[:, i1 + j:i1 + j + nm[1]] = _prune_lowest(sal, nm[0])
                w = Wb[:, j]
                q = torch.where(prune[:, i1 + j], torch.zeros_like(w), w)
                err = (w - q) / Ub[j, j]
                # OBS: compensate the removed weight on the block's later columns of the same row
                Wb[:, j:] -= err.unsqueeze(1) * Ub[j, j:].unsqueeze(0)
                Wb[:, j] = q
                errs[:, j] = err
            W1[:, i1:i2] = Wb
            W1[:, i2:] -= errs @ U[i1:i2, i2:]  # lazy batch update of all later columns
        W1[prune] = 0.0
    return W1.to(W.dtype), ~prune


def prune_sparse(model: nn.Module, calib: torch.Tensor | None, method: str, sparsity: float,
                 pattern: str = "unstructured", *, micro_batch: int = 8, act_device=None, compute_device=None,
                 blocksize: int = 128, percdamp: float = 0.01) -> PruneResult:
    """Prune every decoder linear of ``model`` in place to ``sparsity`` (0 allowed: nothing changes).
    The registered methods wrap this after validating the ratio."""
    check(method in SPARSE_METHODS, f"sparse method {method!r}; allowed: {', '.join(SPARSE_METHODS)}")
    check(0 <= sparsity < 1, f"sparsity {sparsity!r} must be in [0, 1)")
    nm = parse_pattern(pattern, sparsity) if pattern != "unstructured" else None
    check(isinstance(blocksize, int) and blocksize > 0, f"blocksize={blocksize!r} must be a positive integer")
    check(percdamp >= 0, f"percdamp={percdamp!r} must be >= 0 (fraction of the mean Hessian diagonal)")
    layers = decoder_layers(model)
    module_names = {id(mod): name for name, mod in model.named_modules()}
    masks: dict[str, torch.Tensor] = {}
    per_layer: list[float] = [0.0] * len(layers)

    def prune_layer(index: int, layer: nn.Module, stats: dict) -> None:
        prefix = module_names[id(layer)]
        pruned = total = 0
        for rel, linear in layer_linears(layer).items():
            W = linear.weight.data
            full = f"{prefix}.{rel}.weight"
            if method == "magnitude":
                keep = magnitude_keep(W, sparsity, nm)
            elif method == "wanda":
                keep = wanda_keep(W, stats[rel].col_norms(), sparsity, nm)
            else:
                new_w, keep = sparsegpt_prune(W, stats[rel].hessian(), sparsity, nm, blocksize, percdamp, full)
                W.copy_(new_w)
            W.masked_fill_(~keep, 0)
            masks[full] = keep.cpu()
            pruned += int((~keep).sum())
            total += keep.numel()
        per_layer[index] = pruned / max(total, 1)

    calib_info = None
    if method == "magnitude":
        with torch.no_grad():
            for index, layer in enumerate(layers):
                prune_layer(index, layer, {})
    else:
        check(calib is not None, f"{method} needs calibration tokens [n_samples, seq_len]; got None")
        calib = check_calib(calib, model.model.embed_tokens.num_embeddings)
        stat_cls = InputNorms if method == "wanda" else Hessian
        run_layerwise(model, calib, lambda _name, lin: stat_cls(lin.in_features, device=lin.weight.device),
                      prune_layer, micro_batch=micro_batch, act_device=act_device, compute_device=compute_device)
        calib_info = {"n_samples": int(calib.shape[0]), "seq_len": int(calib.shape[1])}
    return PruneResult(model, masks, _info(model, masks, method, pattern, sparsity, per_layer, calib_info))


def _info(model, masks, method, pattern, sparsity, per_layer, calib_info) -> dict:
    counts = param_counts(model)
    pruned = sum(int((~m).sum()) for m in masks.values())
    prunable = sum(m.numel() for m in masks.values())
    emb_nonzero, seen = 0, set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        mod = getattr(model, get)()
        if mod is not None and id(mod.weight) not in seen:
            seen.add(id(mod.weight))
            emb_nonzero += int(torch.count_nonzero(mod.weight))
    return {
        "method": method,
        "pattern": pattern,
        "ratio": sparsity,
        "achieved_ratio": pruned / counts["non_embedding"],
        "matrix_sparsity": pruned / max(prunable, 1),
        "pruned_params": pruned,
        "prunable_params": prunable,
        "total_params": counts["total"],
        "non_embedding_params": counts["non_embedding"],
        "nonzero_params": counts["nonzero"],
        "nonzero_non_embedding_params": counts["nonzero"] - emb_nonzero,
        "per_layer_sparsity": per_layer,
        "calib": calib_info,
        "dense": "embeddings, norms, output head",
    }


def _registered(method: str, allowed: tuple[str, ...]):
    def run(model, calib, ratio, **options) -> PruneResult:
        unknown = sorted(set(options) - set(allowed))
        check(not unknown, f"unknown option(s) {', '.join(map(repr, unknown))} for {method}; "
                           f"allowed: {', '.join(allowed)}")
        check_ratio(ratio)
        return prune_sparse(model, calib, method, float(ratio), **options)

    run.__name__ = method
    run.__doc__ = f"{method} sparse pruning to ``ratio`` (see pvs.prune.sparse); options: {', '.join(allowed)}."
    return run


_LAYERWISE_OPTIONS = ("pattern", "micro_batch", "act_device", "compute_device")
# the authors' calibration for Wanda and SparseGPT: 128 C4 documents of 8192 tokens, seed 0
_C4 = Calibration("C4 (en, train shard 00000)", 128, 8192, "LPC pruning/wanda/scripts/prune_llama3.1-8b.sh")
magnitude = register("magnitude", "sparse", needs_calib=False, scorer="|W| per matrix (data-free)")(
    _registered("magnitude", ("pattern",)))
wanda = register("wanda", "sparse", authors=_C4, scorer="|W| x input-feature norm, per output row")(
    _registered("wanda", _LAYERWISE_OPTIONS))
sparsegpt = register("sparsegpt", "sparse", authors=_C4, scorer="OBS saliency with weight reconstruction")(
    _registered("sparsegpt", _LAYERWISE_OPTIONS + ("blocksize", "percdamp")))
