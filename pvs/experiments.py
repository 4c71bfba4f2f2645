"""The paper's experiments and the training arms each one runs: the one list every part of pvs reads.

Torch-free, so planning (pvs.plan), rendering (pvs.report) and the notebook runner import it cheaply.

    for name in EXPERIMENTS: ...                    # equal_tokens, token_scaling, ratio_sweep, released_parent
    arms = experiment_arms("equal_tokens", cfg)     # what pvs.study trains and pvs.plan prices
    NOTEBOOKS["ratio_sweep"]                        # notebooks/03_ratio_sweep.ipynb runs it
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pvs.errors import PvsError

if TYPE_CHECKING:  # pvs.config reads the experiment list from here
    from pvs.config import RunConfig

EXPERIMENTS = ("equal_tokens", "token_scaling", "ratio_sweep", "released_parent")
"""In the order the study runs them and the report shows them."""
NOTEBOOKS = {
    "equal_tokens": "01_equal_tokens.ipynb",
    "token_scaling": "02_token_scaling.ipynb",
    "ratio_sweep": "03_ratio_sweep.ipynb",
    "released_parent": "04_released_parent.ipynb",
}
"""The notebook (in notebooks/) that runs each experiment."""
FIGURES_NOTEBOOK = "99_figures.ipynb"
"""The final notebook: every table, figure and claim from the metrics records."""
CLAIM_EXPERIMENTS = ("equal_tokens", "token_scaling", "ratio_sweep")
"""The experiments whose rows the paper's four claims are tested on (pvs.claims)."""


@dataclass(frozen=True)
class Arm:
    """One training run of the study."""

    init: str
    """'pruned' (P-R) or 'scratch' (S)."""
    variant: str
    """Pruning variant whose architecture (and mask) the arm uses, e.g. 'wanda-2:4'."""
    ratio: float
    tokens: int
    """Training tokens of this arm."""
    budget: str
    """Which comparison it serves: 'N' (equal training tokens), 'P+N' (equal total), or 'xP' (scaling)."""
    seed: int = 0


def check_experiment(name: str) -> None:
    if name not in EXPERIMENTS:
        raise PvsError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")


def experiment_arms(name: str, cfg: "RunConfig") -> list[Arm]:
    """The arms experiment ``name`` trains under ``cfg`` (released_parent: none here; pvs.study builds its
    two parents' arms, since they depend on which parent is loaded)."""
    check_experiment(name)
    s, P, N = cfg.study, cfg.budget.pretrain_tokens, cfg.budget.retrain_tokens
    if name == "equal_tokens":
        arms = []
        for v in s.methods:
            seeds = s.headline_seeds if v == s.headline_method else s.seeds
            arms += [Arm(init, v, s.ratio, N, "N", seed) for seed in seeds for init in ("pruned", "scratch")]
            arms += [Arm("scratch", v, s.ratio, P + N, "P+N", seed) for seed in s.seeds]
        return arms
    if name == "token_scaling":
        return [Arm(init, v, s.ratio, max(1, round(f * P)), f"{f:g}P", seed) for v in s.scaling_methods
                for f in s.scaling_fracs for seed in s.seeds for init in ("pruned", "scratch")]
    if name == "ratio_sweep":
        return [a for v in s.sweep_methods for r in s.sweep_ratios for seed in s.seeds for a in
                (Arm("pruned", v, r, N, "N", seed), Arm("scratch", v, r, N, "N", seed),
                 *([Arm("scratch", v, r, P + N, "P+N", seed)] if s.sweep_equal_total else []))]
    return []  # released_parent
