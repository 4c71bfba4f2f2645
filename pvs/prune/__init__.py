"""Pruning: every method of the study behind one registry (see ``pvs.prune.registry``)."""
from pvs.prune.registry import (GRANULARITIES, METHODS, SPARSE_PATTERNS, PruneResult, check_ratio,
                                get_method, known_methods, parse_variant, register)

__all__ = ["GRANULARITIES", "METHODS", "SPARSE_PATTERNS", "PruneResult", "check_ratio", "get_method",
           "known_methods", "parse_variant", "register"]
