"""From a pruning ratio to a target architecture: the shape every structured method prunes to, and the
architecture a from-scratch baseline trains at the same size.

The ratio is the fraction of the parent's NON-EMBEDDING parameters removed, so the target keeps about
(1 - ratio) x the parent's non-embedding parameters.

- depth: keep ``round(L * (1 - ratio))`` layers (at least 1, fewer than L). A layer's non-embedding
  parameters are the same in every layer, so the achieved ratio is within half a layer of the request:
  ``|achieved - ratio| <= 1 / (2L)`` (the final norm shifts it by a hair more).
- width: ``candidate_shapes`` enumerates shapes with the parent's depth and head_dim, hidden a multiple of
  ``hidden_step`` (head_dim for parents with hidden >= 2048, else 8) and divisible by the head count (so
  the stock Llama config, and thus a from-scratch twin, can hold it), FFN a multiple of ``ffn_step`` (32
  for FFN >= 1024, else 8), and with ``prune_heads`` also fewer query/KV heads (GQA kept: heads a multiple
  of KV heads, at most the parent's group size). For each (hidden, heads) the FFN width that lands nearest
  the target is taken, and the shape is a candidate if its non-embedding count is within ``tolerance``
  (default 2 %) of (1 - ratio) x the parent's.

Choosing among candidates:
- ``target_shape`` (parameter count only, no model): the most BALANCED shrink: the smallest spread between
  the log shrink factors of the pruned dimensions (hidden and FFN; heads too with ``prune_heads``), then the
  nearest parameter count. Our rule, stated here because the paper's own rule is not available.
- ``search_shape`` (with a model and calibration tokens): among up to ``max_candidates`` candidates spread
  over the hidden-width range (always including the balanced one), the one with the lowest calibration LM
  loss right after one-shot pruning: minitron-width for width (importance computed once, then each
  candidate cut from it), minitron-depth for depth. This is pvs's stand-in for the paper's architecture
  search tables ``tab:nas-*``, whose contents and criterion are not available to us.

``build_table`` (pvs.prune.shape_search, with ``search_shape``) writes ``<cache>/shapes/<parent>.json``
(``user_table_dir()``: data/cache/shapes or $PVS_CACHE/shapes; ratios 0.5-0.8, depth and width: chosen shape,
parameter counts, achieved ratio, criterion); ``table_shape(parent, ratio, kind)`` reads it back, from that
folder if it holds the table, else from the tables shipped in ``pvs/prune/shapes/`` (``TABLE_DIR``; the ones
the committed results used, rewritten only by passing ``table_dir=TABLE_DIR``). So a user's table never
edits the installed package. The CLI verb that fills a tier's table is ``pvs shapes --tier TIER [--parent
PARENT] [--search]`` (``fill_command``); a table or ratio that is missing is a PvsError naming the table and
that command, never a silent fallback.

Named entries. A table may hold more than one entry per (kind, ratio), told apart by ``"name"``; an entry
without a name is pvs's own, named ``"pvs"`` (``DEFAULT_ENTRY``), and is what ``table_shape`` returns unless
``entry=`` names another. ``build_table`` generates only pvs's entries and keeps the named ones already in the
file when it rewrites it (as long as the parent shape is unchanged; they were counted against it). Entries:

- ``"pvs"``: pvs's search: the parameter-count rule above (or the calibration-loss search with
  ``--search``). Llama-3.1-8B width at 0.5: hidden 2816, FFN 9504, heads 32/8 (achieved 0.4997).
- ``"authors"`` (``llama3.1-8b.json``, width, ratio 0.5 only): the authors' Minitron-width target, from
  their script (zlab-princeton/llm-pruning-collection, pruning/minitron/scripts/prune_llama3.1-8b.sh:
  ``main.py width --hidden_size 3072 --ffn_hidden_size 9216``; their MaxText config ``llama3.1-4b-width``):
  hidden 3072, FFN 9216, heads unchanged (32 query / 8 KV), 32 layers. By pvs's count (non-embedding
  parameters) it removes about 46.6 % (achieved_ratio 0.4663), not 50 %; presumably the authors picked
  round widths rather than matching a parameter count (their ratio definition is not available).

``fill_command(name)`` names the command that writes a table.

    shape = target_shape(ModelShape(32, 4096, 32, 8, 128, 14336, 128256), 0.5, "width")
    build_table("llama3.1-8b", parent_shape)                     # parameter-count criterion
    build_table("tiny-parent", shape_of(model), model, calib)    # calibration-loss criterion
    table_shape("llama3.1-8b", 0.6, "depth")
    table_shape("llama3.1-8b", 0.5, "width", entry="authors")    # hidden 3072, FFN 9216
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from pvs.errors import PvsError, check
from pvs.prune.registry import check_ratio
from pvs.records import read_json
from pvs.shape import ModelShape, replace, shape_param_counts

KINDS = ("depth", "width")
RATIOS = (0.5, 0.6, 0.7, 0.8)
DEFAULT_TOLERANCE = 0.02
TABLE_DIR = Path(__file__).resolve().parent / "shapes"
PARAMS_CRITERION = "params: non-embedding count within tolerance of (1-ratio) x parent; most balanced shrink"
LOSS_CRITERION = "calib_loss: lowest calibration LM loss after one-shot pruning among candidates"
DEFAULT_ENTRY = "pvs"
"""Name of pvs's own (generated) table entries; the entries without a ``"name"`` key."""


def non_embedding(shape: ModelShape) -> int:
    return shape_param_counts(shape)["non_embedding"]


def achieved_ratio(parent: ModelShape, shape: ModelShape) -> float:
    return 1.0 - non_embedding(shape) / non_embedding(parent)


def depth_tolerance(parent: ModelShape) -> float:
    """How far a depth target's achieved ratio may be from the request: half a layer, plus the final norm."""
    return 0.5 / parent.n_layers + parent.hidden / non_embedding(parent)


def check_kind(kind: str) -> None:
    check(kind in KINDS, f"shape kind {kind!r}; allowed: {', '.join(KINDS)}")


def check_reachable(parent: ModelShape, target: ModelShape) -> None:
    """PvsError unless pruning ``parent`` can produce ``target`` (no dimension grows, head_dim and vocab equal,
    valid GQA, and something is removed)."""
    target.validate()
    for name in ("n_layers", "hidden", "n_heads", "n_kv_heads", "ffn"):
        got, limit = getattr(target, name), getattr(parent, name)
        check(got <= limit, f"target {name}={got} exceeds the parent's {limit}; pruning cannot grow a model "
                            f"(allowed: 1..{limit})")
    check(target.attn_head_dim == parent.attn_head_dim,
          f"target head_dim={target.attn_head_dim}; structured pruning keeps the parent's {parent.attn_head_dim}")
    check(target.vocab == parent.vocab, f"target vocab={target.vocab}; pruning keeps the parent's {parent.vocab}")
    check(target.n_heads // target.n_kv_heads <= parent.n_heads // parent.n_kv_heads,
          f"target has {target.n_heads // target.n_kv_heads} query heads per KV head; the parent has only "
          f"{parent.n_heads // parent.n_kv_heads}")
    check(non_embedding(target) < non_embedding(parent), "target shape equals the parent; nothing to prune")


def table_entry(parent: ModelShape, shape: ModelShape, **extra) -> dict:
    counts = shape_param_counts(shape)
    return {"shape": shape, "non_embedding": counts["non_embedding"], "total": counts["total"],
            "achieved_ratio": achieved_ratio(parent, shape), **extra}


def depth_target(parent: ModelShape, ratio: float) -> ModelShape:
    check_ratio(ratio)
    keep = max(1, round(parent.n_layers * (1 - ratio)))
    check(keep < parent.n_layers,
          f"ratio={ratio} removes no whole layer of a {parent.n_layers}-layer parent; depth pruning needs "
          f"ratio >= {0.5 / parent.n_layers:.3f}")
    return replace(parent, n_layers=keep)


def _default_steps(parent: ModelShape) -> tuple[int, int]:
    # steps of 8 are too coarse for a miniature (hidden 32, FFN 64): there, an eighth of the width
    hidden_step = parent.attn_head_dim if parent.hidden >= 2048 else max(1, min(8, parent.hidden // 8))
    ffn_step = 32 if parent.ffn >= 1024 else max(1, min(8, parent.ffn // 16))
    return hidden_step, ffn_step


def candidate_shapes(parent: ModelShape, ratio: float, kind: str = "width", tolerance: float = DEFAULT_TOLERANCE,
                     prune_heads: bool = False, hidden_step: int | None = None,
                     ffn_step: int | None = None) -> list[dict]:
    """Shapes at ``ratio`` (see the module docstring), best first by the parameter-count rule. Each entry:
    shape, non_embedding, total, achieved_ratio, balance (spread of log shrink factors; 0 = even)."""
    check_ratio(ratio)
    check_kind(kind)
    parent.validate()
    if kind == "depth":
        return [table_entry(parent, depth_target(parent, ratio), balance=0.0)]
    check(0 < tolerance < 1, f"tolerance={tolerance!r} must be in (0, 1) (relative to the target parameter count)")
    d_step, f_step = _default_steps(parent)
    hidden_step, ffn_step = hidden_step or d_step, ffn_step or f_step
    check(hidden_step > 0 and ffn_step > 0, f"hidden_step={hidden_step}, ffn_step={ffn_step} must be positive")
    hd, L = parent.attn_head_dim, parent.n_layers
    target = (1 - ratio) * non_embedding(parent)
    rep = parent.n_heads // parent.n_kv_heads
    head_options = ([(kv * r, kv) for kv in range(1, parent.n_kv_heads + 1) for r in range(1, rep + 1)]
                    if prune_heads else [(parent.n_heads, parent.n_kv_heads)])
    out = []
    for heads, kv in head_options:
        for hidden in range(hidden_step, parent.hidden + 1, hidden_step):
            if hidden % heads:
                continue
            fixed = L * (hidden * hd * 2 * (heads + kv) + 2 * hidden) + hidden
            f_exact = (target - fixed) / (3 * hidden * L)
            f = min(parent.ffn // ffn_step * ffn_step, max(ffn_step, round(f_exact / ffn_step) * ffn_step))
            if f > parent.ffn:
                continue
            shape = replace(parent, hidden=hidden, ffn=f, n_heads=heads, n_kv_heads=kv, head_dim=hd)
            n = non_embedding(shape)
            if abs(n - target) > tolerance * target or shape == parent:
                continue
            factors = [hidden / parent.hidden, f / parent.ffn] + ([heads / parent.n_heads] if prune_heads else [])
            logs = [math.log(x) for x in factors]
            out.append(table_entry(parent, shape, balance=max(logs) - min(logs)))
    out.sort(key=lambda e: (round(e["balance"], 9), abs(e["non_embedding"] - target), -e["shape"].hidden))
    return out


def target_shape(parent: ModelShape, ratio: float, kind: str, tolerance: float = DEFAULT_TOLERANCE,
                 prune_heads: bool = False, **steps) -> ModelShape:
    """The shape ``parent`` prunes to at ``ratio`` by the parameter-count rule (PvsError if none fits)."""
    cands = candidate_shapes(parent, ratio, kind, tolerance, prune_heads, **steps)
    if not cands:
        raise PvsError(f"no {kind} shape of parent {_shape_str(parent)} keeps {1 - ratio:.3f} of its non-embedding "
                       f"parameters within tolerance={tolerance}; allowed: a larger tolerance, smaller "
                       f"hidden_step/ffn_step, or prune_heads=True")
    return cands[0]["shape"]


def _shape_str(s: ModelShape) -> str:
    return (f"(layers={s.n_layers}, hidden={s.hidden}, heads={s.n_heads}, kv_heads={s.n_kv_heads}, "
            f"head_dim={s.attn_head_dim}, ffn={s.ffn})")


def shape_dict(s: ModelShape) -> dict:
    return dict(dataclasses.asdict(s), head_dim=s.attn_head_dim)


def jsonable(e: dict) -> dict:
    return {k: (shape_dict(v) if isinstance(v, ModelShape) else v) for k, v in e.items()}


def user_table_dir() -> Path:
    """Where ``pvs shapes`` and build_table write tables: beside the data cache, not in the package."""
    from pvs.paths import cache_root
    return cache_root() / "shapes"


def table_path(parent_name: str, table_dir: str | Path | None) -> Path:
    """The table of ``parent_name`` in ``table_dir`` (default: the user's folder, where tables are written)."""
    check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", parent_name or "")),
          f"parent name {parent_name!r} must be letters, digits, '.', '_' or '-' (it names a file)")
    return Path(table_dir or user_table_dir()) / f"{parent_name}.json"


def find_table(parent_name: str, table_dir: str | Path | None = None) -> Path:
    """The table a lookup reads: ``table_dir``'s if given, else the user's if written, else the shipped one."""
    if table_dir:
        return table_path(parent_name, table_dir)
    user = table_path(parent_name, None)
    return user if user.is_file() else table_path(parent_name, TABLE_DIR)


def entry_name(entry: dict) -> str:
    """A table entry's name: its ``"name"``, or ``DEFAULT_ENTRY`` for pvs's own entries."""
    return entry.get("name", DEFAULT_ENTRY)


def named_entries(path: Path, parent_shape: dict) -> list[dict]:
    """The hand-added named entries (e.g. the authors' shape) of the table at ``path``, to carry over when
    build_table rewrites it; none if there is no table or its parent shape differs."""
    if not path.is_file():
        return []
    old = read_json(path)
    if old.get("parent_shape") != parent_shape:
        return []
    return [e for e in old.get("entries", []) if entry_name(e) != DEFAULT_ENTRY]


def fill_command(parent_name: str) -> str:
    """The command that writes table ``parent_name``: a tier's own parent table is ``<tier>-parent``, any
    other is named after its parent (``--parent``), or written from a shape alone with build_table."""
    tier = parent_name[:-len("-parent")] if parent_name.endswith("-parent") else None
    if tier:
        return f"pvs shapes --tier {tier}"
    return (f"pvs shapes --tier <tier> --parent {parent_name} (a released parent or a model folder of that "
            f"name), or pvs.prune.shape_search.build_table({parent_name!r}, <parent ModelShape>)")


def table_shape(parent_name: str, ratio: float, kind: str, table_dir=None, entry: str = DEFAULT_ENTRY) -> ModelShape:
    """The target shape recorded for ``parent_name`` at ``ratio`` and ``kind``: pvs's own entry, or the named
    ``entry`` (e.g. ``"authors"``). PvsError naming the table and the command that fills it if the table or
    the ratio is missing, and listing the names that exist if ``entry`` is unknown."""
    check_kind(kind)
    path = find_table(parent_name, table_dir)
    folders = [Path(table_dir)] if table_dir else [user_table_dir(), TABLE_DIR]
    known = sorted({p.stem for d in folders if d.is_dir() for p in d.glob("*.json")})
    check(path.is_file(), f"no shape table for parent {parent_name!r} ({path}); known: {', '.join(known) or '(none)'}; "
                          f"write it with: {fill_command(parent_name)}")
    entries = [e for e in read_json(path)["entries"] if e["kind"] == kind]
    at_ratio = [e for e in entries if abs(e["ratio"] - ratio) < 1e-9]
    if not at_ratio:
        have = sorted({e["ratio"] for e in entries})
        raise PvsError(f"shape table {parent_name!r} ({path}) has no {kind} entry for ratio={ratio}; it has "
                       f"{have or 'none'}; fill it with: {fill_command(parent_name)}{_ratio_note(ratio)}")
    for e in at_ratio:
        if entry_name(e) == entry:
            shape = ModelShape(**e["shape"])
            shape.validate()
            return shape
    names = sorted({entry_name(e) for e in at_ratio})
    raise PvsError(f"shape table {parent_name!r} has no {kind} entry named {entry!r} at ratio={ratio}; "
                   f"allowed: {', '.join(names)}")


def _ratio_note(ratio: float) -> str:
    """What to add to the fill command for a ratio that ``pvs shapes`` does not write."""
    if any(abs(ratio - r) < 1e-9 for r in RATIOS):
        return ""
    return (f" (pvs shapes writes ratios {', '.join(map(str, RATIOS))} only; for ratio={ratio} call "
            f"build_table(..., ratios=({ratio},)) with a table_dir of its own)")


def table_name(cfg) -> str:
    """The shape table a study config prunes with: study.shape_table, else the released parent's name, else
    '<tier>-parent' (the tier's own pretrained parent)."""
    s = cfg.study
    return s.shape_table or (Path(s.parent).name if s.parent else f"{cfg.tier}-parent")


def study_width_target(cfg, ratio: float) -> dict:
    """The width target at ``ratio`` from the config's shape table (entry study.shape_entry), as a dict of
    ModelShape fields; a missing table or ratio is a PvsError naming the table and the command that fills it."""
    return shape_dict(table_shape(table_name(cfg), ratio, "width", entry=cfg.study.shape_entry))
