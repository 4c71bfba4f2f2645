"""Prune a parent into a self-contained model directory with a record of how it was made.

    record = prune_to_dir(parent_model, "sparsegpt-2:4", 0.5, calib, "runs/cpu/pruned/sparsegpt-2:4-0.5-<hash>")

Writes ``<out>/model`` (loadable with ``AutoModelForCausalLM.from_pretrained`` after ``import pvs``:
a stock LlamaForCausalLM for uniform shapes, pvs's registered per-layer class for FLAP/Sheared
LLaMA; sparse masks explicitly in ``model/sparse_masks.safetensors``) and ``<out>/prune.json``
(method, ratio, target and achieved shape, parameters kept, calibration data hash, wall time,
peak memory). A finished directory is returned as is, never overwritten.
"""
from __future__ import annotations

import copy
import ctypes
import gc
import hashlib
import os
import threading
import time
from pathlib import Path

import torch

from pvs.errors import check
from pvs.model import param_counts, require_llama
from pvs.prune.registry import check_ratio, get_method, parse_variant
from pvs.records import code_version, read_json, sha256_dir, write_record


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS at entry may include freed memory
        pass


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak on GPU, sampled resident set size (RSS) on CPU
    (both reported as the increase over the level at entry)."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak_bytes, self._stop = interval, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.cuda = torch.cuda.is_available()
        gc.collect()
        _malloc_trim()  # hand freed memory back to the OS, so RSS at entry is live memory only
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._max = self._rss()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._max, self._rss()) - self._base
        return False


def calib_hash(calib: torch.Tensor | None) -> str | None:
    if calib is None:
        return None
    return hashlib.sha256(calib.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def prune_model(parent: torch.nn.Module, variant: str, ratio: float, calib: torch.Tensor | None,
                options: dict | None = None):
    """Run pruning method ``variant`` (e.g. 'wanda', 'sparsegpt-2:4') on a copy of ``parent``.
    Returns (PruneResult, measurements)."""
    require_llama(parent.config, "parent")
    check_ratio(ratio)
    name, variant_opts = parse_variant(variant)
    spec = get_method(name)
    check(calib is not None or not spec.needs_calib, f"method {name!r} needs calibration data")
    model = copy.deepcopy(parent)
    t0 = time.time()
    with PeakMemory() as mem:
        result = spec.fn(model, calib if spec.needs_calib else None, ratio, **{**variant_opts, **(options or {})})
    return result, {"wall_s": round(time.time() - t0, 2), "peak_memory_mb": round(mem.peak_bytes / 2**20, 1),
                    "peak_memory_kind": "cuda allocated" if mem.cuda else "process RSS increase"}


def save_pruned(result, out_dir: Path) -> Path:
    from pvs.prune.masks import save_masks
    from pvs.train import save_model
    model_dir = Path(out_dir) / "model"
    save_model(result.model, model_dir)
    if result.masks:
        save_masks(result.masks, model_dir)
    return model_dir


def prune_to_dir(parent: torch.nn.Module, variant: str, ratio: float, calib: torch.Tensor | None,
                 out_dir: str | Path, options: dict | None = None, provenance: dict | None = None) -> dict:
    """Prune and save; the record ``out_dir/prune.json`` is returned (cached when it already exists)."""
    out_dir = Path(out_dir)
    record_path = out_dir / "prune.json"
    if record_path.is_file():
        return read_json(record_path)
    code = code_version()  # taken before the (possibly long) pruning, not when the record is written
    result, measured = prune_model(parent, variant, ratio, calib, options)
    name, _ = parse_variant(variant)
    model_dir = save_pruned(result, out_dir)
    parent_counts, counts = param_counts(parent), param_counts(result.model)
    record = {
        "method": name, "variant": variant, "granularity": get_method(name).granularity,
        "ratio": ratio, "options": options or {}, "code": code,
        "parent_params": parent_counts, "params": counts,
        "achieved_ratio": 1 - (counts["nonzero"] - (parent_counts["total"] - parent_counts["non_embedding"])
                               if result.masks else counts["non_embedding"]) / parent_counts["non_embedding"],
        "config": result.model.config.to_diff_dict() if hasattr(result.model.config, "to_diff_dict") else {},
        "info": result.info,
        "calibration": {"samples": None if calib is None else int(calib.shape[0]),
                        "seq_len": None if calib is None else int(calib.shape[1]), "sha256": calib_hash(calib)},
        "checkpoint_sha256": sha256_dir(model_dir, "*.safetensors"),
        **measured, **(provenance or {}),
    }
    check(record["achieved_ratio"] > 0, f"pruning {variant} at ratio {ratio} removed nothing")
    return write_record(record_path, record)
