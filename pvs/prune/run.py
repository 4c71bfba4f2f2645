"""Prune a parent into a self-contained model directory with a record of how it was made.

    record = prune_to_dir(parent_model, "sparsegpt-2:4", 0.5, calib, "runs/cpu/pruned/sparsegpt-2:4-0.5-<hash>")

Writes ``<out>/model`` (pvs.checkpoint.save_model: a stock LlamaForCausalLM for uniform shapes, loadable
with ``AutoModelForCausalLM.from_pretrained``; pvs's per-layer class for FLAP/Sheared LLaMA, loadable the same
way after ``import pvs.hetero`` or with ``trust_remote_code=True``; sparse masks explicitly in
``model/sparse_masks.safetensors``) and ``<out>/prune.json`` (method, ratio, target and achieved shape,
parameters kept, calibration data hash, wall time, peak memory). A finished directory is returned as is, never overwritten.
"""
from __future__ import annotations

import copy
import ctypes
import gc
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import torch

from pvs.errors import check
from pvs.model import param_counts, require_llama
from pvs.prune.registry import check_ratio, get_method, parse_variant
from pvs.checkpoint import model_files
from pvs.records import code_version, dir_lock, read_json, sha256_dir, write_record


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


def save_pruned(result, out_dir: Path, tokenizer=None) -> Path:
    from pvs.checkpoint import save_model
    return save_model(result.model, Path(out_dir) / "model", masks=result.masks, tokenizer=tokenizer)


REACH_TOLERANCE = 0.1
"""How far the achieved ratio may fall from the requested one. Methods that remove whole units (layers,
heads) land on the nearest reachable ratio; beyond this distance the request is refused, not rounded."""


def _plain(options: dict | None) -> dict:
    """The JSON-able part of a method's options (a data iterator is not part of what was asked); a callable
    option that describes itself (``record``, e.g. pvs.downstream.TaskScorer) is kept as that description."""
    out = {}
    for k, v in (options or {}).items():
        v = getattr(v, "record", v)
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def achieved_ratio(parent_counts: dict, counts: dict, sparse: bool) -> float:
    """Fraction of the parent's non-embedding parameters removed (for sparse models: zeroed)."""
    embedding = parent_counts["total"] - parent_counts["non_embedding"]
    kept = counts["nonzero"] - embedding if sparse else counts["non_embedding"]
    return 1 - kept / parent_counts["non_embedding"]


def check_reached(variant: str, ratio: float, achieved: float, model) -> None:
    """Refuse a pruned model that is not what was asked: a ratio the method cannot reach on this parent,
    or a model left without any attention."""
    check(achieved > 0, f"pruning {variant} at ratio {ratio} removed nothing")
    check(abs(achieved - ratio) <= REACH_TOLERANCE,
          f"{variant} cannot reach ratio {ratio} on this parent: the closest it gets is {achieved:.3f}; "
          f"ask for a ratio within {REACH_TOLERANCE} of what it can reach")
    heads = getattr(model.config, "layer_num_heads", None) or \
        [model.config.num_attention_heads] * model.config.num_hidden_layers
    check(sum(heads) > 0, f"{variant} at ratio {ratio} removes every attention head of this parent; "
                          f"ask for a lower ratio")


def check_cached(record: dict, out_dir: Path, variant: str, ratio: float, options: dict | None) -> dict:
    """A finished pruned folder is reused only if it holds what was asked, complete."""
    asked = {"variant": variant, "ratio": ratio, "options": _plain(options)}
    held = {"variant": record.get("variant"), "ratio": record.get("ratio"), "options": _plain(record.get("options"))}
    check(asked == held, f"{str(out_dir)!r} already holds {held['variant']} at ratio {held['ratio']}"
                         f"{' with other options' if asked['options'] != held['options'] else ''}, not {variant} at "
                         f"ratio {ratio}; choose another output folder or delete it")
    model_dir = out_dir / "model"
    files, have = record.get("files"), model_files(model_dir)
    if files is not None:
        bad = sorted(n for n in set(files) | set(have) if files.get(n) != have.get(n))
    else:  # records written before file sizes were kept: compare the content hash
        bad = [] if sha256_dir(model_dir, "*.safetensors") == record.get("checkpoint_sha256") else ["*.safetensors"]
    check(not bad, f"the pruned model in {str(model_dir)!r} does not match its record ({', '.join(bad)} missing or "
                   f"changed); delete {str(out_dir)!r} and rerun pruning")
    return record


def prune_to_dir(parent: torch.nn.Module, variant: str, ratio: float, calib: torch.Tensor | None,
                 out_dir: str | Path, options: dict | None = None, provenance: dict | None = None,
                 tokenizer=None) -> dict:
    """Prune and save (with ``tokenizer`` beside the weights); the record ``out_dir/prune.json`` is returned.
    A folder that already holds this result is reused; one holding anything else is refused."""
    out_dir = Path(out_dir)
    record_path = out_dir / "prune.json"
    if record_path.is_file():
        return check_cached(read_json(record_path), out_dir, variant, ratio, options)
    fresh = not out_dir.exists()
    try:
        with dir_lock(out_dir):
            if record_path.is_file():  # another process finished it while we waited
                return check_cached(read_json(record_path), out_dir, variant, ratio, options)
            return _prune_and_save(parent, variant, ratio, calib, out_dir, options, provenance, tokenizer)
    except BaseException:
        if fresh and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a refused or failed pruning leaves no empty folder behind
        raise


def _prune_and_save(parent, variant, ratio, calib, out_dir, options, provenance, tokenizer) -> dict:
    code = code_version()  # taken before the (possibly long) pruning, not when the record is written
    result, measured = prune_model(parent, variant, ratio, calib, options)
    name, _ = parse_variant(variant)
    parent_counts, counts = param_counts(parent), param_counts(result.model)
    achieved = achieved_ratio(parent_counts, counts, bool(result.masks))
    check_reached(variant, ratio, achieved, result.model)  # before anything is written
    model_dir = save_pruned(result, out_dir, tokenizer)
    record = {
        "method": name, "variant": variant, "granularity": get_method(name).granularity,
        "ratio": ratio, "options": _plain(options), "code": code,
        "parent_params": parent_counts, "params": counts, "achieved_ratio": achieved,
        "config": result.model.config.to_diff_dict() if hasattr(result.model.config, "to_diff_dict") else {},
        "info": result.info,
        "calibration": {"samples": None if calib is None else int(calib.shape[0]),
                        "seq_len": None if calib is None else int(calib.shape[1]), "sha256": calib_hash(calib)},
        "checkpoint_sha256": sha256_dir(model_dir, "*.safetensors"), "files": model_files(model_dir),
        **measured, **(provenance or {}),
    }
    return write_record(Path(out_dir) / "prune.json", record)
