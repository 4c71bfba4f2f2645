"""Where pvs keeps what it makes: one home for the folder layout and its environment variables.

    cache_root()     data/cache   or $PVS_CACHE    corpora, tokenizers, token shards, task copies, parents
    runs_root()      runs         or $PVS_RUNS     checkpoints and records of every run (`--runs DIR` sets it)
    figures_root()   figures      or $PVS_FIGURES  committed metrics, tables, figures, claims

The variables are read at each call, not at import, so `pvs ... --runs DIR` (which sets $PVS_RUNS) and
notebooks started from it (which inherit it) agree on one place. Relative values are taken from the
working directory and turned absolute.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _root(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).absolute() if value else default


def cache_root() -> Path:
    return _root("PVS_CACHE", REPO_ROOT / "data" / "cache")


def runs_root() -> Path:
    return _root("PVS_RUNS", REPO_ROOT / "runs")


def figures_root() -> Path:
    return _root("PVS_FIGURES", REPO_ROOT / "figures")


def display(path: str | Path) -> str:
    """``path`` relative to the checkout when it lies inside it (records and printed lines stay free of
    machine-specific absolute paths), else as given."""
    p = Path(path)
    try:
        return str(p.absolute().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)
