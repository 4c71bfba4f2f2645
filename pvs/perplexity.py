"""Validation loss and perplexity on held-out text, as the paper's protocol: non-overlapping
windows, token-mean cross-entropy, PPL = exp(loss).

Held-out text is per corpus source (each source's held-out documents in id order). The validation
loss is the token-weighted mean over the held-out text of *every* source (the paper: DCLM val loss);
``eval.max_tokens`` caps the tokens scored per source, taking windows spread evenly over the whole
source, never its first K tokens. Each source's own loss is reported beside it. Held-out Wikipedia
summaries stand in for WikiText and held-out BBC News for CNN/DailyMail, and are named as such.

    result = evaluate_heldout(model, shard_paths, cfg.eval)
    result["val_loss"], result["loss"]["wiki"], result["val_blocks"]   # blocks: for the text bootstrap
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from pvs.tokens import TokenStream

# what each held-out source stands in for in the paper's tables
STAND_INS = {
    "wiki": "Wikipedia summaries (WikiText stand-in)",
    "bbc": "BBC News 2004-05 (CNN/DailyMail stand-in)",
}
PROTOCOL = "every source's held-out text, token-weighted; capped sources: evenly spread windows"
BLOCK_TOKENS = 4096
"""Scored windows are summed in consecutive blocks of about this many tokens (within one source); the
blocks let the statistics resample the evaluation text (a block bootstrap) without storing every window."""


@torch.no_grad()
def stream_loss(model: torch.nn.Module, stream: TokenStream, seq_len: int, max_tokens: int = 0,
                batch_size: int = 8) -> dict:
    """Token-mean cross-entropy over the scored windows of ``stream`` (``TokenStream.eval_window_ids``),
    with per-block sums (``blocks``: list of [tokens, loss_sum])."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_window: list[float] = []
    windows = list(stream.eval_windows(seq_len, max_tokens))
    for lo in range(0, len(windows), batch_size):
        batch = windows[lo: lo + batch_size]
        x = torch.stack([b[0] for b in batch]).to(device)
        y = torch.stack([b[1] for b in batch]).to(device)
        logits = model(input_ids=x, use_cache=False).logits.float()
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(len(batch), -1)
        per_window += nll.double().sum(1).tolist()
    model.train(was_training)
    per_block = max(1, BLOCK_TOKENS // seq_len)
    blocks = [[seq_len * len(per_window[k: k + per_block]), math.fsum(per_window[k: k + per_block])]
              for k in range(0, len(per_window), per_block)]
    count = seq_len * len(per_window)
    loss = math.fsum(per_window) / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count, "windows": len(per_window),
            "windows_total": stream.n_windows(seq_len), "blocks": blocks}


def heldout_sources(shards: dict) -> dict:
    """{source: shard path} of the per-source held-out shards (``valid.<source>``), sorted by name."""
    return {name.split(".", 1)[1]: path for name, path in sorted(shards.items()) if name.startswith("valid.")}


def evaluate_heldout(model: torch.nn.Module, shards: dict, eval_cfg) -> dict:
    """Validation loss over the held-out text of every source (token-weighted) and each source's own
    loss and perplexity."""
    t0 = time.time()
    seq = eval_cfg.seq_len
    per_source = {src: stream_loss(model, TokenStream(path), seq, eval_cfg.max_tokens, eval_cfg.batch_size)
                  for src, path in heldout_sources(shards).items()}
    total = math.fsum(b[1] for r in per_source.values() for b in r["blocks"])
    count = sum(r["tokens"] for r in per_source.values())
    blocks = [(src, b) for src, r in per_source.items() for b in r["blocks"]]
    return {
        "val_loss": total / max(count, 1), "val_tokens": count, "protocol": PROTOCOL,
        "ppl": {src: r["ppl"] for src, r in per_source.items()},
        "loss": {src: r["loss"] for src, r in per_source.items()},
        "tokens": {src: r["tokens"] for src, r in per_source.items()},
        "windows": {src: [r["windows"], r["windows_total"]] for src, r in per_source.items()},
        "val_blocks": {"source": [src for src, _ in blocks], "tokens": [blk[0] for _, blk in blocks],
                       "loss_sum": [blk[1] for _, blk in blocks]},
        "stand_ins": {src: STAND_INS[src] for src in per_source if src in STAND_INS},
        "seq_len": seq, "max_tokens_per_source": eval_cfg.max_tokens, "wall_s": round(time.time() - t0, 1),
    }


def _scored_pairs(shards: dict, eval_cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(previous token, target) of every token ``evaluate_heldout`` scores, in the same windows."""
    prev, target = [], []
    for path in heldout_sources(shards).values():
        for x, y in TokenStream(path).eval_windows(eval_cfg.seq_len, eval_cfg.max_tokens):
            prev.append(x)
            target.append(y)
    return torch.cat(prev), torch.cat(target)


def count_baselines(pretrain: TokenStream, fit_tokens: int, shards: dict, eval_cfg, vocab: int,
                    tune: TokenStream | None = None) -> dict:
    """Unigram and bigram models fitted on the first ``fit_tokens`` tokens of the pretraining stream
    (the parent's budget P) and scored on exactly the tokens the validation loss scores: the bars a
    trained parent must clear."""
    ids = np.asarray(pretrain.ids[: max(2, min(fit_tokens, len(pretrain)))], dtype=np.int64)
    prev, target = _scored_pairs(shards, eval_cfg)
    uni = _unigram_logp(torch.from_numpy(ids), vocab)
    out = {"fit_tokens": int(ids.size), "scored_tokens": int(target.numel()),
           "unigram": float(-uni[target].double().mean())}
    table = _bigram_table(torch.from_numpy(ids), vocab)
    if table is not None:
        lam = _tune_lambda(table, uni, tune)
        out["bigram"] = _bigram_loss(table, uni, prev, target, lam)
        out["bigram_lambda"] = lam
    return out


def _unigram_logp(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    counts = torch.bincount(ids, minlength=vocab).double() + 1.0  # add-one: no token has probability 0
    return (counts / counts.sum()).log().float()


def _bigram_table(ids: torch.Tensor, vocab: int):
    if vocab > 16384:  # a dense count table would not fit
        return None
    pair = torch.bincount(ids[:-1] * vocab + ids[1:], minlength=vocab * vocab).view(vocab, vocab).float()
    return pair, pair.sum(1)


def _bigram_loss(table, uni_logp: torch.Tensor, prev: torch.Tensor, target: torch.Tensor, lam: float) -> float:
    """p(b|a) = lam * c(a,b)/c(a) + (1-lam) * p(b), interpolated with the add-one unigram."""
    pair, row = table
    cond = torch.where(row[prev] > 0, pair[prev, target] / row[prev].clamp(min=1), torch.zeros(()))
    return float(-(lam * cond + (1 - lam) * uni_logp[target].exp()).log().double().mean())


def _tune_lambda(table, uni_logp, tune: TokenStream | None) -> float:
    lams = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    if tune is None:
        return 0.8
    t = torch.from_numpy(np.asarray(tune.ids, dtype=np.int64))
    return min(lams, key=lambda lam: _bigram_loss(table, uni_logp, t[:-1], t[1:], lam))
