"""Pruning: every method of the study behind one registry (see ``pvs.prune.registry``).

Importing this package registers pvs's per-layer-width model class (FLAP, Sheared LLaMA) with
transformers' Auto classes, so ``AutoModelForCausalLM.from_pretrained`` loads any pruned checkpoint
without ``trust_remote_code``.
"""
import pvs.hetero  # noqa: F401  (registration side effect)
from pvs.prune.registry import (GRANULARITIES, METHODS, SPARSE_PATTERNS, PruneResult, check_ratio,
                                get_method, known_methods, parse_variant, register)

__all__ = ["GRANULARITIES", "METHODS", "SPARSE_PATTERNS", "PruneResult", "check_ratio", "get_method",
           "known_methods", "parse_variant", "register"]
