"""Hard-concrete L0 gates and the mask set that Sheared LLaMA learns (Louizos et al. 2018; Xia et al. 2023).

A hard-concrete gate z in [0, 1] has a learnable location ``log_alpha``; a sample is a stretched,
clamped binary-concrete draw, so z is exactly 0 or 1 with positive probability and differentiable
in ``log_alpha`` in between. ``L0Masks`` holds one gate tensor per prunable structure of a uniform
Llama model and turns their keep-probabilities into an expected parameter count, the expected
sparsity and the Lagrangian that pulls that sparsity to a target shape's.

    masks = L0Masks(parent_shape, target_shape)
    z = masks.sample(generator)          # {'layer': [L], 'head': [L, kv], 'intermediate': [L, ffn], 'hidden': [d]}
    loss, stats = masks.lagrangian(ramp=0.5)
    z_final = masks.deterministic()      # exactly the target counts kept, the rest 0

Constants are the authors' (LLM-Shearing l0_module.py): temperature beta = 2/3, stretch interval
(gamma, zeta) = (-0.1, 1.1), log_alpha kept in [log 1e-2, log 1e2].

Heads are gated in whole GQA groups (one KV head with the query heads that read it), so every
pruned model is valid GQA with the parent's group size.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pvs.errors import check
from pvs.shape import ModelShape

BETA = 2.0 / 3.0
"""Temperature of the binary-concrete relaxation."""
GAMMA, ZETA = -0.1, 1.1
"""Stretch interval: s in (0, 1) is mapped to s * (ZETA - GAMMA) + GAMMA, then clamped to [0, 1]."""
EPS = 1e-6
"""Uniform noise is drawn from (EPS, 1 - EPS) and probabilities clamped the same way, so logs stay finite."""
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))
"""log_alpha is clamped here after every step (as the authors do), so no gate saturates for good."""
DETERMINISTIC_SCALE = 0.8
"""The authors' final soft value of a kept unit is sigmoid(log_alpha / BETA * 0.8)."""

MODULES = ("layer", "head", "intermediate", "hidden")
"""Prunable structures: whole layers, KV groups of heads per layer, FFN neurons per layer, residual channels."""


def sample_hard_concrete(log_alpha: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One reparameterised draw z in [0, 1] per entry of ``log_alpha`` (differentiable in log_alpha)."""
    u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype)
    u = u * (1 - 2 * EPS) + EPS
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def prob_zero(log_alpha: torch.Tensor) -> torch.Tensor:
    """Closed-form P(z = 0) = Q(z <= 0) = sigmoid(BETA * log(-GAMMA / ZETA) - log_alpha)."""
    return torch.sigmoid(BETA * math.log(-GAMMA / ZETA) - log_alpha).clamp(EPS, 1 - EPS)


def keep_prob(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z > 0): the probability that a unit survives, its expected contribution to the model size."""
    return 1.0 - prob_zero(log_alpha)


def deterministic_gate(log_alpha: torch.Tensor, keep: int, binary: bool = False) -> torch.Tensor:
    """Final gate per row (last dim): the ``keep`` units with the largest log_alpha get their soft value
    sigmoid(log_alpha / BETA * 0.8) (or 1 when ``binary``), all others exactly 0."""
    soft = torch.ones_like(log_alpha) if binary else torch.sigmoid(log_alpha / BETA * DETERMINISTIC_SCALE)
    n = log_alpha.shape[-1]
    if keep >= n:
        return soft
    order = torch.argsort(log_alpha, dim=-1, descending=True, stable=True)
    kept = torch.zeros_like(log_alpha, dtype=torch.bool).scatter_(-1, order[..., :keep], True)
    return torch.where(kept, soft, torch.zeros_like(soft))


def count_non_embedding(shape: ModelShape, keep: dict[str, torch.Tensor]) -> torch.Tensor:
    """Non-embedding parameters of ``shape`` when each unit survives with the given probability (or 0/1).

    ``keep`` maps 'layer' [L], 'head' [L, kv], 'intermediate' [L, ffn], 'hidden' [d] to keep-probabilities.
    Every matrix entry needs its residual channel and its head group (or neuron) and its layer, so the
    counts couple hidden x heads and hidden x intermediate as in the authors' L0 module; the RMSNorm
    vectors (2 per layer and the final one) couple hidden x layer. With 0/1 masks this is exact.
    """
    hd, group = shape.attn_head_dim, shape.n_heads // shape.n_kv_heads
    hidden, layer = keep["hidden"].sum(), keep["layer"]
    per_group = hd * (2 * group + 2)  # q and o rows/columns of its query heads, k and v of its KV head
    attn = hidden * (layer * keep["head"].sum(-1)).sum() * per_group
    mlp = hidden * (layer * keep["intermediate"].sum(-1)).sum() * 3  # gate, up, down
    norms = hidden * (2 * layer.sum() + 1)
    return attn + mlp + norms


class L0Masks(nn.Module):
    """The hard-concrete gates of one Sheared-LLaMA run, sized to ``parent`` and targeted at ``target``.

    Modules left out of ``modules`` have no gate (constant 1) and must keep the parent's size.
    Each module has its own Lagrange multipliers (lambda_1, lambda_2), as the authors do when a
    target architecture is given; ``constraint='total'`` uses one pair on the overall expected
    sparsity instead. log_alpha starts at ``init_log_alpha`` (+ N(0, init_std) noise, seeded), then
    clamped: the default 5 is what the released code uses (every gate almost surely open); 0 is
    droprate 0.5.
    """

    def __init__(self, parent: ModelShape, target: ModelShape, modules=MODULES, init_log_alpha: float = 5.0,
                 init_std: float = 0.01, seed: int = 0):
        super().__init__()
        unknown = [m for m in modules if m not in MODULES]
        check(not unknown, f"sheared-llama modules {unknown}; allowed: {list(MODULES)}")
        self.parent, self.target, self.modules_on = parent, target, tuple(m for m in MODULES if m in modules)
        self.sizes = {"layer": (parent.n_layers,), "head": (parent.n_layers, parent.n_kv_heads),
                      "intermediate": (parent.n_layers, parent.ffn), "hidden": (parent.hidden,)}
        self.keep_counts = {"layer": target.n_layers, "head": target.n_kv_heads,
                            "intermediate": target.ffn, "hidden": target.hidden}
        for m in MODULES:
            check(m in self.modules_on or self.keep_counts[m] == self.sizes[m][-1],
                  f"sheared-llama: target changes the {m} size ({self.sizes[m][-1]} -> {self.keep_counts[m]}) "
                  f"but module {m!r} is not in modules={list(modules)}")
        self.target_sparsity = {m: 1.0 - self.keep_counts[m] / self.sizes[m][-1] for m in MODULES}
        g = torch.Generator().manual_seed(seed)
        self.log_alpha = nn.ParameterDict({
            m: nn.Parameter(torch.empty(self.sizes[m]).normal_(init_log_alpha, init_std, generator=g))
            for m in self.modules_on})
        # the authors' l0 module keeps lambda_1 and lambda_2 per module, plus one pair for the whole model
        self.lambdas = nn.ParameterDict({f"{m}_{k}": nn.Parameter(torch.zeros(()))
                                         for m in (*self.modules_on, "total") for k in (1, 2)})
        full = {m: torch.ones(sz) for m, sz in self.sizes.items()}
        kept = {m: deterministic_gate(torch.zeros(sz), self.keep_counts[m], binary=True) for m, sz in self.sizes.items()}
        self._parent_params = int(count_non_embedding(parent, full))
        self._target_params = int(count_non_embedding(parent, kept))
        self.clamp_()

    # gates ------------------------------------------------------------------------------------
    def _full(self, make) -> dict[str, torch.Tensor]:
        """One tensor per module; modules without a gate are constant ones."""
        dev = self.lambdas["total_1"].device
        return {m: make(self.log_alpha[m]) if m in self.modules_on else torch.ones(self.sizes[m], device=dev)
                for m in MODULES}

    def sample(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training-time gates: one hard-concrete draw per unit."""
        return self._full(lambda la: sample_hard_concrete(la, generator))

    def keep_probs(self) -> dict[str, torch.Tensor]:
        return self._full(keep_prob)

    def deterministic(self, binary_hidden: bool = False) -> dict[str, torch.Tensor]:
        """Final gates that keep exactly the target count per module (per layer for head and
        intermediate). ``binary_hidden`` gives kept residual channels the value 1 (needed when the
        input embedding and output head are tied, so the channel scale cannot be folded away)."""
        with torch.no_grad():
            return self._full_det(binary_hidden)

    def _full_det(self, binary_hidden: bool) -> dict[str, torch.Tensor]:
        out = {}
        for m in MODULES:
            if m in self.modules_on:
                out[m] = deterministic_gate(self.log_alpha[m].detach(), self.keep_counts[m],
                                            binary=binary_hidden and m == "hidden")
            else:
                out[m] = torch.ones(self.sizes[m], device=self.lambdas["total_1"].device)
        return out

    def clamp_(self) -> None:
        with torch.no_grad():
            for la in self.log_alpha.values():
                la.clamp_(*LOG_ALPHA_RANGE)

    # sparsity and the Lagrangian ----------------------------------------------------------------
    def expected_params(self) -> torch.Tensor:
        return count_non_embedding(self.parent, self.keep_probs())

    def parent_params(self) -> int:
        return self._parent_params

    def target_total_sparsity(self) -> float:
        """Fraction of the parent's non-embedding parameters the target shape removes."""
        return 1.0 - self._target_params / self._parent_params

    def expected_sparsity(self) -> float:
        """1 - expected non-embedding parameters / the parent's (for reporting; no gradient)."""
        with torch.no_grad():
            return float(1.0 - self.expected_params() / self.parent_params())

    def lagrangian(self, ramp: float, constraint: str = "module") -> tuple[torch.Tensor, dict]:
        """lambda_1 (s - t) + lambda_2 (s - t)^2 with t = ramp x target sparsity (ramp goes 0 -> 1 over the
        warmup, the authors' linear schedule from start sparsity 0). Minimised over log_alpha, maximised
        over the lambdas. 'module': one term per module, s its expected sparsity (per layer for per-layer
        gates, averaged); 'total': one term on the whole model's expected sparsity."""
        check(constraint in ("module", "total"), f"sheared-llama constraint={constraint!r}; allowed: 'module', 'total'")
        probs = self.keep_probs()
        total = 1.0 - count_non_embedding(self.parent, probs) / self.parent_params()
        stats = {"expected_sparsity": float(total.detach()), "target_sparsity": ramp * self.target_total_sparsity()}
        terms = []
        if constraint == "total":
            gap = total - stats["target_sparsity"]
            terms.append(self.lambdas["total_1"] * gap + self.lambdas["total_2"] * gap ** 2)
        for m in self.modules_on:
            s = 1.0 - probs[m].sum(-1) / probs[m].shape[-1]
            stats[f"expected_{m}_sparsity"] = float(s.detach().mean())
            if constraint == "module":
                gap = s - ramp * self.target_sparsity[m]
                terms.append((self.lambdas[f"{m}_1"] * gap + self.lambdas[f"{m}_2"] * gap ** 2).mean())
        return torch.stack(terms).sum(), stats

    def lambda_values(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.lambdas.items()}
