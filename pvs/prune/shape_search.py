"""Filling a parent's target-shape table: the calibration-loss search among candidate shapes, and the table
writer behind `pvs shapes` (pvs.prune.shapes reads the tables back and holds the candidate rules).

    shape, info = search_shape(model, calib, 0.6, "width")       # lowest calibration loss after pruning
    build_table("llama3.1-8b", parent_shape)                     # parameter-count criterion
    build_table("tiny-parent", shape_of(model), model, calib)    # calibration-loss criterion

It sits above the methods it calls (minitron-depth's block scores, minitron-width's importance), which
read their targets from pvs.prune.shapes.
"""
from __future__ import annotations

from pvs.errors import check
from pvs.model import shape_of
from pvs.shape import ModelShape, shape_param_counts
from pvs.prune.depth import calibration_loss, minitron_depth_scores
from pvs.prune.shapes import (DEFAULT_TOLERANCE, KINDS, LOSS_CRITERION, PARAMS_CRITERION, RATIOS, check_kind,
                              TABLE_DIR, table_entry, jsonable, named_entries, table_path, candidate_shapes,
                              non_embedding, shape_dict, target_shape)
from pvs.prune.width import activation_importance, prune_to_shape
from pvs.records import atomic_write_json


def _spread(cands: list[dict], k: int) -> list[dict]:
    """Up to k candidates spread evenly over the hidden-width range, always including cands[0]."""
    if len(cands) <= k:
        return list(cands)
    by_hidden = sorted(cands, key=lambda e: (e["shape"].hidden, e["shape"].n_heads))
    picks = {id(cands[0]): cands[0]}
    for j in range(k - 1):
        e = by_hidden[round(j * (len(by_hidden) - 1) / max(k - 2, 1))]
        picks.setdefault(id(e), e)
    return list(picks.values())


def search_shape(model, calib, ratio: float, kind: str, tolerance: float = DEFAULT_TOLERANCE,
                 max_candidates: int = 5, prune_heads: bool = False, batch_size: int = 8,
                 **steps) -> tuple[ModelShape, dict]:
    """The candidate with the lowest calibration LM loss after one-shot pruning; returns (shape, info) with
    every evaluated candidate's loss."""
    check(isinstance(max_candidates, int) and max_candidates >= 1,
          f"max_candidates={max_candidates!r} must be a positive integer")
    check(model.config.model_type == "llama",
          f"search_shape needs a uniform Llama parent; got model_type={model.config.model_type!r}")
    parent = shape_of(model)
    cands = candidate_shapes(parent, ratio, kind, tolerance, prune_heads, **steps)
    if not cands:
        target_shape(parent, ratio, kind, tolerance, prune_heads, **steps)  # raises with the explanation
    evaluated = []
    if kind == "depth":
        for e in cands:
            k = parent.n_layers - e["shape"].n_layers
            start, losses = minitron_depth_scores(model, calib, k, batch_size)
            evaluated.append(dict(e, loss=min(losses), removed_start=start))
    else:
        scores = activation_importance(model, calib, batch_size=batch_size, heads=prune_heads)
        for e in _spread(cands, max_candidates):
            pruned = prune_to_shape(model, scores, e["shape"])
            evaluated.append(dict(e, loss=calibration_loss(pruned, calib, batch_size)))
            del pruned
    best = min(evaluated, key=lambda e: e["loss"])
    info = {"criterion": LOSS_CRITERION, "n_candidates": len(cands),
            "evaluated": [jsonable(e) for e in evaluated]}
    return best["shape"], info


def build_table(parent_name: str, parent: ModelShape, model=None, calib=None, ratios=RATIOS, kinds=KINDS,
                tolerance: float = DEFAULT_TOLERANCE, prune_heads: bool = False, table_dir=None,
                write: bool = True, **search_options) -> dict:
    """The target-shape table of one parent: parameter-count rule without ``model``; calibration-loss search
    (``search_shape``) with ``model`` and ``calib``. Written to ``<table_dir>/<parent_name>.json``, by default
    in the user's table folder (pvs.prune.shapes.user_table_dir), keeping the named entries (e.g. the authors'
    shape) of the table it replaces, or else of the shipped table, if made for the same parent shape."""
    check((model is None) == (calib is None), "build_table needs both model and calib for the loss criterion, "
                                              "or neither for the parameter-count criterion")
    path = table_path(parent_name, table_dir)
    entries = []
    for kind in kinds:
        check_kind(kind)
        for ratio in ratios:
            if model is None:
                cands = candidate_shapes(parent, ratio, kind, tolerance, prune_heads)
                shape = target_shape(parent, ratio, kind, tolerance, prune_heads)
                extra = {"criterion": "params", "n_candidates": len(cands)}
            else:
                shape, info = search_shape(model, calib, ratio, kind, tolerance, prune_heads=prune_heads,
                                           **search_options)
                extra = {"criterion": "calib_loss", "n_candidates": info["n_candidates"],
                         "evaluated": info["evaluated"]}
            entries.append({"ratio": ratio, "kind": kind, **jsonable(table_entry(parent, shape)), **extra})
    table = {"parent": parent_name, "parent_shape": shape_dict(parent),
             "parent_non_embedding": non_embedding(parent),
             "parent_total": shape_param_counts(parent)["total"],
             "ratio_definition": "fraction of the parent's non-embedding parameters removed",
             "tolerance": {"width": tolerance, "depth": "half a layer: |achieved - ratio| <= 1/(2 n_layers)"},
             "criterion": PARAMS_CRITERION if model is None else LOSS_CRITERION,
             "prune_heads": prune_heads, "generated_by": "pvs.prune.shape_search.build_table", "entries": entries}
    if write:
        # named entries of the table replaced, or of the shipped one, whichever was made for this parent shape
        sources = [path] if table_dir else [path, table_path(parent_name, TABLE_DIR)]
        table["entries"] += next((n for n in (named_entries(p, table["parent_shape"]) for p in sources) if n), [])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, table)
    return table
