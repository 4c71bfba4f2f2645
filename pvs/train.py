"""The training loop shared by parent pretraining, retraining of pruned models and scratch baselines.

The paper's recipe (AdamW 0.9/0.95, eps 1e-8, weight decay 0.1, clip 1.0, 5% linear warmup,
cosine to 0.1x peak) on a token budget turned into optimizer steps; fp32 on CPU, bf16 autocast
on GPU; runs under `accelerate launch` on several processes unchanged (DDP). A run writes
resumable checkpoints every ``checkpoint_every`` steps: a killed run restarted with the same
arguments continues from its last checkpoint and ends with the same weights as an
uninterrupted one. ``masks`` keeps sparse models sparse (pruned weights and their gradients are
zeroed every step, so the N:M pattern survives training).

    record = train(model, TokenStream(".../pretrain.bin"), cfg.train, tokens=400_000, out_dir="runs/x")

The loop is three pieces that bench/bench_train.py reuses, so the benchmark times the study's own step:
``start_session`` (accelerate, optimizer, resume), ``train_step`` (one optimizer step) and the record at the end.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pvs import cpu_attention
from pvs.checkpoint import save_model
from pvs.config import TrainConfig, to_dict
from pvs.errors import check
from pvs.lm_loss import linear_cross_entropy
from pvs.model import model_flops_per_token
from pvs.records import code_version, dir_lock, read_json, write_record
from pvs.tokens import TokenStream


def resolve_precision(precision: str) -> str:
    """'auto' -> bf16 autocast on a GPU, fp32 on CPU (bf16 is ~8x slower on CPUs without bf16 units)."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep freed memory in this process for reuse instead of handing it back to the kernel.

    By default glibc serves a block over 128 kB to 32 MB from the heap top or mmap and returns it when freed,
    so a step's large temporaries (the cpu tier's 2,048 x 2,048 logits: 16 MB each) are faulted in page by
    page again every step: ~12k page faults per step at the cpu tier's parent (a step 1.09x slower without
    this setting, with pvs.lm_loss and pvs.cpu_attention on: bench/bench_step_variants.py). Blocks up to
    32 MB now come from the heap, which is trimmed only past 1 GB free. Once per process; False where the C
    library has no mallopt (not glibc)."""
    try:
        mallopt = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallopt", None)
    except OSError:
        return False
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup from 0 over warmup_frac of the steps, then cosine decay to min_lr_frac * lr."""
    warmup = round(cfg.warmup_frac * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_frac + (1.0 - cfg.min_lr_frac) * cosine)


def steps_for(tokens: int, cfg: TrainConfig) -> int:
    """Optimizer steps for a token budget (rounded up to whole steps; the record says the exact tokens)."""
    check(tokens > 0, f"token budget {tokens} must be positive")
    return math.ceil(tokens / (cfg.batch_size * cfg.seq_len))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (embeddings and linears), none on norms and biases."""
    seen, decay, no_decay = set(), [], []
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def _mask_pairs(model: torch.nn.Module, masks: dict | None) -> list:
    if not masks:
        return []
    params = dict(model.named_parameters())
    missing = sorted(set(masks) - set(params))
    check(not missing, f"sparse masks name parameters the model does not have: {missing[:3]}")
    return [(params[n], m.to(params[n].device, dtype=params[n].dtype)) for n, m in masks.items()]


def _save_checkpoint(ckpt_dir: Path, step: int, model, optimizer, code_segments: list) -> None:
    """One file per checkpoint, written atomically; only the newest is kept."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"step-{step:08d}.pt"
    tmp = path.with_suffix(".tmp")
    try:
        torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "code_segments": code_segments}, tmp)
        os.replace(tmp, path)
    except BaseException:  # disk full or interrupted: leave no half-written checkpoint behind
        tmp.unlink(missing_ok=True)
        raise
    for old in ckpt_dir.glob("step-*.pt"):
        if old != path:
            old.unlink()


def _log_lines(path: Path) -> list[str]:
    """The complete lines of a metrics log; a line torn by a kill mid-write (the last one) is dropped,
    since resuming rewrites everything after the checkpoint anyway."""
    if not path.is_file():
        return []
    lines = []
    for ln in path.read_text().splitlines():
        try:
            if isinstance(json.loads(ln).get("step"), int):
                lines.append(ln)
        except (json.JSONDecodeError, AttributeError):
            pass
    return lines


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(ckpt_dir.glob("step-*.pt"))
    return found[-1] if found else None


def train(model: torch.nn.Module, stream: TokenStream, cfg: TrainConfig, tokens: int, out_dir: str | Path,
          masks: dict | None = None, desc: str = "train", extra_record: dict | None = None,
          tokenizer=None) -> dict:
    """Train ``model`` on ``tokens`` tokens of ``stream``; write ``out_dir/model`` (save_pretrained, with
    ``tokenizer`` beside the weights when given),
    ``out_dir/metrics.jsonl`` and ``out_dir/train.json``. A finished run is not redone: its record is returned."""
    out_dir = Path(out_dir)
    record_path = out_dir / "train.json"
    if record_path.is_file():
        return read_json(record_path)
    with dir_lock(out_dir):
        if record_path.is_file():  # checked again under the lock
            return read_json(record_path)
        return _train(model, stream, cfg, tokens, out_dir, masks, desc, extra_record, tokenizer)


run_lock = dir_lock  # one writer per run directory (pvs.records.dir_lock)


@dataclass
class Session:
    """One training run between its set-up and its end: what every step reads (start_session builds it)."""

    acc: object
    """The accelerate.Accelerator (device, processes, autocast, gradient sync)."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    stream: TokenStream
    cfg: TrainConfig
    total_steps: int
    start_step: int
    """0, or the step of the checkpoint the run resumed from."""
    micro: int
    """Sequences per forward pass (train.micro_batch_size, or the whole per-process batch)."""
    n_micro: int
    """Micro-batches accumulated per optimizer step in each process."""
    per_proc: int
    mask_pairs: list
    """(parameter, keep-mask) of a sparse model: its pruned weights stay zero."""
    code_segments: list
    epochs: float
    precision: str
    cpu_kernels: bool
    """fp32 on the CPU, an unwrapped model, a head without bias: the loss through pvs.lm_loss and attention
    through pvs.cpu_attention (the stock step's numbers, to rounding; bench/bench_step_variants.py times both)."""
    attn_before: str
    """The model's attention implementation before the run, put back when it ends."""

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len


def start_session(model: torch.nn.Module, stream: TokenStream, cfg: TrainConfig, tokens: int, out_dir: Path,
                  masks: dict | None = None, desc: str = "train") -> Session:
    """Set a run up: threads, accelerate (processes, precision), the step count for ``tokens``, the optimizer,
    and the state of the newest checkpoint under ``out_dir/checkpoints`` if there is one."""
    from accelerate import Accelerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not torch.cuda.is_available():
        keep_freed_memory()
    precision = resolve_precision(cfg.precision)
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if precision == "bf16" else "no")
    world = acc.num_processes
    micro = cfg.micro_batch_size or cfg.batch_size // world
    per_proc = cfg.batch_size // world
    check(cfg.batch_size % world == 0 and per_proc % micro == 0,
          f"train.batch_size={cfg.batch_size} must split evenly over {world} processes in micro-batches of {micro}")
    total_steps = steps_for(tokens, cfg)
    epochs = stream.epochs(total_steps * cfg.batch_size * cfg.seq_len, cfg.seq_len)
    if epochs > 1 and acc.is_main_process:
        warnings.warn(f"{desc}: a budget of {total_steps * cfg.batch_size * cfg.seq_len:,} tokens repeats "
                      f"{stream.path.name} ({len(stream):,} tokens) for {epochs:.2f} epochs", stacklevel=3)

    optimizer = make_optimizer(model, cfg)
    start_step, code_segments = 0, []
    latest = _latest_checkpoint(Path(out_dir) / "checkpoints")
    if latest is not None:
        state = torch.load(latest, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, code_segments = state["step"], state.get("code_segments", [])
    # which code trained which steps: one entry per (re)start, taken now, not when the record is written
    code_segments = code_segments + [{"from_step": start_step, **code_version()}]
    pairs = _mask_pairs(model, masks)
    # FSDP shards parameters in prepare(); the mask pairs would point at the unsharded tensors
    check(not (masks and acc.distributed_type.name == "FSDP"),
          "sparse masks are not supported under FSDP yet; train sparse models with DDP or one process")
    model, optimizer = acc.prepare(model, optimizer)
    model.train()
    head = getattr(model, "lm_head", None)
    cpu_kernels = (acc.device.type == "cpu" and precision == "fp32" and acc.unwrap_model(model) is model
                   and isinstance(head, torch.nn.Linear) and head.bias is None)
    attn_before = acc.unwrap_model(model).config._attn_implementation
    if cpu_kernels:
        model.set_attn_implementation(cpu_attention.ATTENTION)
    return Session(acc, model, optimizer, stream, cfg, total_steps, start_step, micro, per_proc // micro, per_proc,
                   pairs, code_segments, epochs, precision, cpu_kernels, attn_before)


def next_token_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fused: bool) -> torch.Tensor:
    """Mean cross-entropy of ``model``'s next-token predictions for inputs ``x`` against targets ``y``;
    ``fused``: through pvs.lm_loss from the final hidden states (the same value, without the full logits)."""
    if fused:
        hidden = model.base_model(input_ids=x, use_cache=False).last_hidden_state
        return linear_cross_entropy(hidden.flatten(0, 1), model.lm_head.weight, y.flatten())
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def train_step(s: Session, step: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """One optimizer step (``step`` counts from 0): this process's micro-batches of the step's batch, gradients
    accumulated and synchronised once, sparse masks applied, clipping, the scheduled learning rate, AdamW.
    Returns (mean loss of this process's micro-batches, gradient norm or None, learning rate)."""
    cfg, acc, model = s.cfg, s.acc, s.model
    loss_sum = torch.zeros((), device=acc.device)
    for k in range(s.n_micro):
        lo = acc.process_index * s.per_proc + k * s.micro
        x, y = s.stream.batch(step, cfg.batch_size, cfg.seq_len, cfg.seed, part=slice(lo, lo + s.micro))
        x, y = x.to(acc.device), y.to(acc.device)
        sync = acc.no_sync(model) if k < s.n_micro - 1 else contextlib.nullcontext()
        with sync, acc.autocast():
            loss = next_token_loss(model, x, y, fused=s.cpu_kernels)
            acc.backward(loss / s.n_micro)
        loss_sum += loss.detach() / s.n_micro
    for p, m in s.mask_pairs:  # sparse models: pruned weights get no gradient, so AdamW moments stay zero
        if p.grad is not None:
            p.grad.mul_(m)
    grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
    lr = lr_at(step, s.total_steps, cfg)
    for group in s.optimizer.param_groups:
        group["lr"] = lr
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, m in s.mask_pairs:  # and stay exactly zero (weight decay of 0 is 0, but be explicit)
            p.mul_(m)
    return loss_sum, grad_norm, lr


def _restart_log(path: Path, start_step: int) -> None:
    """Drop log lines written after the checkpoint the run resumes from: they will be written again."""
    kept = [ln for ln in _log_lines(path) if json.loads(ln)["step"] <= start_step]
    path.write_text("".join(ln + "\n" for ln in kept))


def _train(model, stream, cfg, tokens, out_dir, masks, desc, extra_record, tokenizer=None) -> dict:
    from tqdm.auto import tqdm

    s = start_session(model, stream, cfg, tokens, out_dir, masks, desc)
    acc, ckpt_dir, metrics_path = s.acc, out_dir / "checkpoints", out_dir / "metrics.jsonl"
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        _restart_log(metrics_path, s.start_step)

    t0 = time.time()
    bar = tqdm(total=s.total_steps, initial=s.start_step, desc=desc, disable=not acc.is_main_process,
               mininterval=2.0, dynamic_ncols=True)
    loss_val = float("nan")
    try:  # the progress bar ends its line on any exit, so an error or Ctrl-C prints on a line of its own
        for step in range(s.start_step, s.total_steps):
            loss_sum, grad_norm, lr = train_step(s, step)
            done = step + 1
            if done % cfg.log_every == 0 or done == s.total_steps:
                loss_val = acc.reduce(loss_sum, reduction="mean").item()
                now = time.time()
                tok_s = (done - s.start_step) * s.tokens_per_step / (now - t0) if now > t0 else 0.0
                if acc.is_main_process:
                    line = {"step": done, "tokens": done * s.tokens_per_step, "loss": round(loss_val, 5),
                            "lr": lr, "tokens_per_s": round(tok_s, 1),
                            "grad_norm": None if grad_norm is None else round(float(grad_norm), 4)}
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(line) + "\n")
                    bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tok_s:,.0f}")
            bar.update(1)
            if done % cfg.checkpoint_every == 0 and done < s.total_steps:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    _save_checkpoint(ckpt_dir, done, acc.unwrap_model(s.model), s.optimizer, s.code_segments)
    finally:
        bar.close()
        if s.cpu_kernels:  # the attention kernel of training only: evaluation and generation may pass masks
            acc.unwrap_model(s.model).set_attn_implementation(s.attn_before)
    wall = time.time() - t0
    return _finish(s, out_dir, tokens, masks, desc, extra_record, tokenizer, loss_val, wall)


def _finish(s: Session, out_dir: Path, tokens, masks, desc, extra_record, tokenizer, loss_val, wall) -> dict:
    """Save the model (every rank takes part in gathering it), write the run's record, drop its checkpoints."""
    acc, stream = s.acc, s.stream
    acc.wait_for_everyone()
    state = acc.get_state_dict(s.model)  # every rank takes part: FSDP gathers the shards here
    if acc.is_main_process:
        model = acc.unwrap_model(s.model)
        save_model(model, out_dir / "model", masks=masks, state_dict=state, tokenizer=tokenizer)
        record = {
            "stage": desc, "tokens_requested": tokens, "steps": s.total_steps,
            "tokens": s.total_steps * s.tokens_per_step, "epochs": round(s.epochs, 4),
            "data": {"shard": str(stream.path), "tokens": len(stream), "sha256": stream.meta.get("sha256")},
            "train_config": to_dict(s.cfg), "precision": s.precision, "processes": acc.num_processes,
            "final_loss": loss_val, "wall_s": round(wall, 1), "cpu_kernels": s.cpu_kernels,
            "resumed_from_step": s.start_step,
            "sparse": bool(masks), "code": s.code_segments[-1], "code_segments": s.code_segments,
            "model_flops_per_token": model_flops_per_token(model, s.cfg.seq_len),  # MFU of a grid (bench/)
            **(extra_record or {}),
        }
        write_record(out_dir / "train.json", record)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    acc.wait_for_everyone()
    return read_json(out_dir / "train.json")
