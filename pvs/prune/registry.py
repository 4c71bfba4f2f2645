"""The table of pruning methods: each one a small function over (model, calibration data, ratio).

A method module registers its functions with ``@register``; ``get_method`` finds them by name.
Method names used across pvs (CLI, study configs, records):

    depth:  minitron-depth, shortgpt
    width:  minitron-width, flap, sheared-llama
    sparse: sparsegpt, wanda, magnitude   (pattern: unstructured, 2:4, 4:8)

A variant string ``"sparsegpt-2:4"`` means method ``sparsegpt`` with ``pattern="2:4"``.

Each entry describes itself, so the study (pvs.study) and the planner (pvs.plan) never name a method:
the authors' calibration (``authors``), the options the study derives from its config
(``study_options``), whether pruning trains on the retrain split (``trains``), its cost (``cost``) and how a
run whose budget was too small is reworded in the study's terms (``budget_hint``).
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


@dataclass(frozen=True)
class Calibration:
    """The calibration data the authors' scripts give a method (Llama-3.1-8B runs)."""

    source: str
    """Their dataset, e.g. 'C4 (en, train shard 0)'; pvs draws from the tier's calib split instead."""
    samples: int
    seq_len: int
    script: str
    """Where they set it (LPC = zlab-princeton/llm-pruning-collection)."""

    @property
    def tokens(self) -> int:
        return self.samples * self.seq_len


MINITRON_CALIBRATION = Calibration("WikiText-103 train", 1024, 8192, "LPC pruning/minitron/scripts/prune_llama3.1-8b.sh")
"""The authors' calibration for Minitron depth and width and ShortGPT (their 31-layer runs)."""


@dataclass
class MethodSpec:
    name: str
    fn: Callable[..., PruneResult]
    granularity: str
    """'depth', 'width' or 'sparse'."""
    needs_calib: bool = True
    """False for data-free methods (magnitude)."""
    authors: Calibration | None = None
    """The authors' calibration; pvs uses it when study.calibration = 'authors' (the paper tier)."""
    scorer: str = ""
    """What ranks the units it removes, in a few words (pvs plan and the README print it)."""
    study_options: Callable | None = None
    """``study_options(cfg, ratio) -> dict``: options the study passes, from its config (part of the pruned
    run's key), e.g. a width target from the parent's shape table (pvs.prune.shapes.study_width_target)."""
    trains: bool = False
    """Pruning itself trains on token batches (Sheared LLaMA's mask learning): the study passes ``data=``,
    ``steps`` batches of ``batch_size`` x study.calib_seq_len tokens of the retrain split (both options come
    from study_options), and counts them in the arm's total tokens."""
    budget_hint: Callable | None = None
    """``budget_hint(cfg) -> str``: the study settings to raise when the method raises BudgetTooSmall."""
    cost: Callable | None = None
    """``cost(cfg, parent, kept, samples, seq_len) -> (FLOPs, note)`` for pvs plan (parent and kept are
    ModelShapes; samples x seq_len the calibration it draws); None: one forward pass of the parent over the
    calibration tokens (nothing for data-free methods)."""
    per_layer_widths: bool = False
    """The pruned widths differ per layer (FLAP), so pvs plan prices it at the width target's shape."""

    def calibration(self, cfg) -> tuple[int, int]:
        """(sequences, tokens each) the study draws for this method from the tier's calib split: the authors'
        under study.calibration = 'authors' (each sequence at most train.seq_len, the longest the parent was
        trained on), else the tier's shared study.calib_samples x study.calib_seq_len. For a method that
        trains while pruning it is one training batch (else train.batch_size x study.calib_seq_len)."""
        if cfg.study.calibration == "authors" and self.authors is not None:
            return self.authors.samples, min(self.authors.seq_len, cfg.train.seq_len)
        if self.trains:  # a method that trains while pruning reads training batches
            return cfg.train.batch_size, cfg.study.calib_seq_len
        return cfg.study.calib_samples, cfg.study.calib_seq_len


class BudgetTooSmall(PvsError):
    """A method whose own training did not converge in the budget it was given (e.g. Sheared LLaMA's mask
    learning). ``message(hint)`` rewords it with the settings a caller should raise."""

    def message(self, hint: str) -> str:
        raise NotImplementedError


METHODS: dict[str, MethodSpec] = {}


def register(name: str, granularity: str, needs_calib: bool = True, **describe):
    """Decorator: ``@register("wanda", "sparse", authors=Calibration(...))`` over
    ``fn(model, calib, ratio, **options) -> PruneResult``; ``describe`` fills the MethodSpec fields."""
    check(granularity in GRANULARITIES, f"granularity {granularity!r}; allowed: {GRANULARITIES}")

    def deco(fn):
        METHODS[name] = MethodSpec(name, fn, granularity, needs_calib, **describe)
        return fn

    return deco


def check_options(method: str, options: dict, allowed: tuple[str, ...]) -> None:
    """Every method checks its options the same way: unknown names are a one-line error listing the allowed."""
    unknown = sorted(set(options) - set(allowed))
    check(not unknown, f"unknown option(s) {', '.join(map(repr, unknown))} for {method}; "
                       f"allowed: {', '.join(allowed) or '(none)'}")


def check_batch_size(batch_size) -> None:
    check(isinstance(batch_size, int) and batch_size > 0, f"batch_size={batch_size!r} must be a positive integer")


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
