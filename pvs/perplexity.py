"""Validation loss and perplexity on held-out text, as the paper's protocol: non-overlapping
windows, token-mean cross-entropy, PPL = exp(loss).

Held-out text is per corpus source. They are stand-ins, named as what they are: held-out
Wikipedia summaries stand in for WikiText, held-out BBC News for CNN/DailyMail; the
validation loss is on held-out text of the whole pretraining mix (the paper: DCLM val loss).

    result = evaluate_heldout(model, shard_paths, cfg.eval)
    result["val_loss"], result["ppl"]["wiki"]
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from pvs.tokens import TokenStream

# what each held-out source stands in for in the paper's tables
STAND_INS = {
    "wiki": "Wikipedia summaries (WikiText stand-in)",
    "bbc": "BBC News 2004-05 (CNN/DailyMail stand-in)",
}


@torch.no_grad()
def stream_loss(model: torch.nn.Module, stream: TokenStream, seq_len: int, max_tokens: int = 0,
                batch_size: int = 8) -> dict:
    """Token-mean cross-entropy over non-overlapping windows of ``stream``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count, batch = 0.0, 0, []

    def run(batch):
        nonlocal total, count
        x = torch.stack([b[0] for b in batch]).to(device)
        y = torch.stack([b[1] for b in batch]).to(device)
        logits = model(input_ids=x, use_cache=False).logits.float()
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()

    for window in stream.eval_windows(seq_len, max_tokens):
        batch.append(window)
        if len(batch) == batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    model.train(was_training)
    loss = total / max(count, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": count}


def evaluate_heldout(model: torch.nn.Module, shards: dict, eval_cfg) -> dict:
    """Validation loss on the held-out pretraining mix and perplexity per held-out source."""
    t0 = time.time()
    seq = eval_cfg.seq_len
    mix = stream_loss(model, TokenStream(shards["valid"]), seq, eval_cfg.max_tokens, eval_cfg.batch_size)
    per_source = {}
    for name, path in sorted(shards.items()):
        if name.startswith("valid."):
            src = name.split(".", 1)[1]
            per_source[src] = stream_loss(model, TokenStream(path), seq, eval_cfg.max_tokens, eval_cfg.batch_size)
    return {
        "val_loss": mix["loss"], "val_tokens": mix["tokens"],
        "ppl": {src: r["ppl"] for src, r in per_source.items()},
        "loss": {src: r["loss"] for src, r in per_source.items()},
        "tokens": {src: r["tokens"] for src, r in per_source.items()},
        "stand_ins": {src: STAND_INS[src] for src in per_source if src in STAND_INS},
        "seq_len": seq, "max_tokens_per_source": eval_cfg.max_tokens, "wall_s": round(time.time() - t0, 1),
    }


def unigram_entropy(stream: TokenStream, vocab: int) -> float:
    """Entropy (nats/token) of the stream's own unigram distribution: the loss of the best
    context-free model, the bar a trained parent must clear by far."""
    counts = torch.bincount(torch.from_numpy(stream.ids.astype("int64")), minlength=vocab).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def unigram_cross_entropy(train: TokenStream, test: TokenStream, vocab: int, alpha: float = 1.0) -> float:
    """Loss of an add-alpha unigram model fit on ``train`` evaluated on ``test`` (nats/token)."""
    counts = torch.bincount(torch.from_numpy(train.ids.astype("int64")), minlength=vocab).double() + alpha
    logp = (counts / counts.sum()).log()
    ids = torch.from_numpy(test.ids.astype("int64"))
    return float(-logp[ids].mean())


def bigram_cross_entropy(train: TokenStream, test: TokenStream, vocab: int, tune: TokenStream | None = None) -> float | None:
    """Loss (nats/token) on ``test`` of a count-based bigram model fit on ``train``, interpolated with the
    add-one unigram: p(b|a) = lam * c(a,b)/c(a) + (1-lam) * p(b); lam is chosen on ``tune`` (held apart from
    ``test``). The bar a parent must clear to have learned more than adjacent-token statistics.
    None for vocabularies too large for a dense count table."""
    if vocab > 16384:
        return None
    ids = torch.from_numpy(train.ids.astype("int64"))
    pair = torch.bincount(ids[:-1] * vocab + ids[1:], minlength=vocab * vocab).view(vocab, vocab).float()
    row = pair.sum(1, keepdim=True)
    uni = torch.bincount(ids, minlength=vocab).double() + 1.0
    uni = (uni / uni.sum()).float()

    def loss(stream: TokenStream, lam: float) -> float:
        t = torch.from_numpy(stream.ids.astype("int64"))
        a, b = t[:-1], t[1:]
        cond = torch.where(row[a, 0] > 0, pair[a, b] / row[a, 0].clamp(min=1), torch.zeros(()))
        return float(-(lam * cond + (1 - lam) * uni[b]).log().mean())

    lams = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    best = min(lams, key=lambda lam: loss(tune, lam)) if tune is not None else 0.8
    return loss(test, best)
