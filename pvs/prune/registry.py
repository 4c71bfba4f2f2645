"""The table of pruning methods: each one a small function over (model, calibration data, ratio).

A method module registers its functions with ``@register``; ``get_method`` finds them by name.
Method names used across pvs (CLI, study configs, records):

    depth:  minitron-depth, shortgpt
    width:  minitron-width, flap, sheared-llama
    sparse: sparsegpt, wanda, magnitude   (pattern: unstructured, 2:4, 4:8)

A variant string ``"sparsegpt-2:4"`` means method ``sparsegpt`` with ``pattern="2:4"``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from pvs.errors import PvsError, check

# modules that hold the methods; imported on first lookup so `import pvs` stays light
_METHOD_MODULES = ("pvs.prune.sparse", "pvs.prune.depth", "pvs.prune.width", "pvs.prune.flap",
                   "pvs.prune.sheared")

GRANULARITIES = ("depth", "width", "sparse")
SPARSE_PATTERNS = ("unstructured", "2:4", "4:8")


@dataclass
class PruneResult:
    """What a pruning method returns."""

    model: torch.nn.Module
    """The pruned model (a new module or the input modified in place)."""
    masks: dict[str, torch.Tensor] | None = None
    """Sparse methods: parameter name -> bool keep-mask, stored explicitly (not re-derived from zeros)."""
    info: dict = field(default_factory=dict)
    """Method-specific, JSON-serialisable details: removed layers, scores, target shape, ..."""


@dataclass
class MethodSpec:
    name: str
    fn: Callable[..., PruneResult]
    granularity: str
    """'depth', 'width' or 'sparse'."""
    needs_calib: bool = True
    """False for data-free methods (magnitude)."""


METHODS: dict[str, MethodSpec] = {}


def register(name: str, granularity: str, needs_calib: bool = True):
    """Decorator: ``@register("wanda", "sparse")`` over ``fn(model, calib, ratio, **options) -> PruneResult``."""
    check(granularity in GRANULARITIES, f"granularity {granularity!r}; allowed: {GRANULARITIES}")

    def deco(fn):
        METHODS[name] = MethodSpec(name, fn, granularity, needs_calib)
        return fn

    return deco


def _load_all() -> None:
    for mod in _METHOD_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a method module not written yet must not break the others
            if e.name != mod:
                raise


def known_methods() -> list[str]:
    _load_all()
    return sorted(METHODS)


def parse_variant(variant: str) -> tuple[str, dict]:
    """'sparsegpt-2:4' -> ('sparsegpt', {'pattern': '2:4'}); 'wanda' -> ('wanda', {})."""
    _load_all()
    check(isinstance(variant, str) and variant, f"pruning method {variant!r}; allowed: {allowed_variants()}")
    base, sep, tail = variant.rpartition("-")
    if sep and ":" in tail:  # an N:M suffix must be one of the patterns the methods implement
        check(tail in SPARSE_PATTERNS[1:], f"unknown sparsity pattern {tail!r} in {variant!r}; allowed patterns: "
                                           f"{', '.join(SPARSE_PATTERNS[1:])} (N of every M weights pruned), "
                                           f"on {', '.join(m for m in known_methods() if METHODS[m].granularity == 'sparse')}")
    for pattern in SPARSE_PATTERNS[1:]:
        suffix = "-" + pattern
        if variant.endswith(suffix):
            base = variant[: -len(suffix)]
            spec = get_method(base)
            check(spec.granularity == "sparse",
                  f"pattern {pattern!r} applies to sparse methods only, not {base!r}")
            return base, {"pattern": pattern}
    get_method(variant)
    return variant, {}


def allowed_variants() -> str:
    """Every method name, and the N:M forms of the sparse ones, for error messages and --help."""
    sparse = [m for m in known_methods() if METHODS[m].granularity == "sparse"]
    return (", ".join(known_methods()) + "; sparse methods also as NAME-" + " or NAME-".join(SPARSE_PATTERNS[1:])
            + f" ({', '.join(sparse)})")


def get_method(name: str) -> MethodSpec:
    _load_all()
    if name not in METHODS:
        raise PvsError(f"unknown pruning method {name!r}; allowed: {allowed_variants()}")
    return METHODS[name]


def check_ratio(ratio: float) -> None:
    """Pruning ratios are fractions of the parent's non-embedding parameters removed, in (0, 1)."""
    check(isinstance(ratio, (int, float)) and 0 < ratio < 1,
          f"pruning ratio {ratio!r} must be in (0, 1) (fraction of non-embedding parameters removed)")
