"""The validation metric: what is scored, how it is averaged, and the count baselines beside it."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from pvs.config import DataConfig
from pvs.perplexity import count_baselines, evaluate_heldout, stream_loss
from pvs.tokens import TokenStream, prepare_shards, prepare_tokenizer
from helpers import synthetic_stream


@dataclass
class Eval:
    seq_len: int = 16
    max_tokens: int = 0
    batch_size: int = 4


class Uniform(torch.nn.Module):
    """Logits all equal: every token costs exactly ln V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.w = vocab, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab) + self.w})()


class Bigram(torch.nn.Module):
    """A fixed bigram table as a model: the loss depends on the text, so sources differ."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)))

    def forward(self, input_ids, use_cache=False):
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_uniform_logits_cost_ln_v_and_the_cap_spreads_windows(tmp_path):
    stream = TokenStream(synthetic_stream(tmp_path / "s.bin", n_tokens=2000, vocab=97))
    full = stream_loss(Uniform(97), stream, seq_len=16)
    assert math.isclose(full["loss"], math.log(97), rel_tol=1e-6)  # float32 log-softmax
    assert full["windows"] == stream.n_windows(16) and full["tokens"] == 16 * full["windows"]
    assert sum(b[0] for b in full["blocks"]) == full["tokens"]
    capped = stream_loss(Uniform(97), stream, seq_len=16, max_tokens=160)
    assert capped["tokens"] == 160 and capped["windows"] == 10
    ids = stream.eval_window_ids(16, 160)
    # spread over the whole stream, not its first 160 tokens
    assert ids[0] == 0 and ids[-1] > 0.8 * stream.n_windows(16) and len(set(ids)) == 10


def test_the_loss_is_the_hand_computed_mean(tmp_path):
    stream = TokenStream(synthetic_stream(tmp_path / "s.bin", n_tokens=600, vocab=97))
    model = Bigram(97)
    got = stream_loss(model, stream, seq_len=16, batch_size=3)
    total, count = 0.0, 0
    for i in range(stream.n_windows(16)):  # a plain loop over non-overlapping windows
        w = torch.from_numpy(stream.window(i, 16))
        logp = torch.log_softmax(model.table.detach()[w[:-1]].double(), -1)
        total -= float(logp[torch.arange(16), w[1:]].sum())
        count += 16
    assert math.isclose(got["loss"], total / count, rel_tol=1e-6)


def _corpus(folder: Path, shuffle_seed: int | None) -> Path:
    """A tiny corpus folder: held-out documents of three sources, in sorted or shuffled order."""
    rng = random.Random(0)
    words = ["the", "king", "ship", "whale", "said", "market", "rose", "sea", "law", "tax", "and", "of"]
    docs = []
    for src in ("alpha", "beta", "gamma"):
        for k in range(6):
            text = " ".join(rng.choice(words[: 4 + 3 * ("alpha", "beta", "gamma").index(src)]) for _ in range(120))
            docs.append({"id": f"{src}/{k:02d}", "source": src, "text": text})
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(docs)
    folder.mkdir(parents=True)
    for split in ("pretrain", "retrain", "calib", "valid"):
        with open(folder / f"{split}.jsonl", "w") as f:
            for d in docs:
                f.write(json.dumps(d) + "\n")
    return folder


def test_val_loss_covers_every_source_and_ignores_document_order(tmp_path):
    cfg = DataConfig(vocab_size=300)
    results = []
    for name, shuffle in (("sorted", None), ("shuffled", 7)):
        corpus = _corpus(tmp_path / name / "corpus", shuffle)
        tok = prepare_tokenizer(_corpus(tmp_path / "tok" / name, None), cfg, tmp_path / name / "tok")
        shards = prepare_shards(corpus, tok, tmp_path / name / "shards")
        model = Bigram(len(tok), seed=1)
        results.append(evaluate_heldout(model, shards, Eval(seq_len=16)))
    a, b = results
    assert math.isclose(a["val_loss"], b["val_loss"], rel_tol=1e-12)  # document order of the split: no effect
    assert set(a["loss"]) == {"alpha", "beta", "gamma"}
    for src, loss in a["loss"].items():
        assert not math.isclose(a["val_loss"], loss, rel_tol=1e-6), src  # not one source's loss
    weighted = sum(a["loss"][s] * a["tokens"][s] for s in a["loss"]) / sum(a["tokens"].values())
    assert math.isclose(a["val_loss"], weighted, rel_tol=1e-9)
    blocks = a["val_blocks"]
    assert all(isinstance(t, int) for t in blocks["tokens"]) and set(blocks["source"]) == set(a["loss"])
    assert math.isclose(sum(blocks["loss_sum"]) / sum(blocks["tokens"]), a["val_loss"], rel_tol=1e-9)


def test_count_baselines_score_the_same_tokens(tmp_path):
    path = synthetic_stream(tmp_path / "pretrain.bin", n_tokens=20000, vocab=97)
    valid = synthetic_stream(tmp_path / "valid.x.bin", n_tokens=3000, vocab=97, seed=1)
    shards = {"pretrain": path, "valid.x": valid}
    b = count_baselines(TokenStream(path), 10_000, shards, Eval(seq_len=16), 97)
    assert b["fit_tokens"] == 10_000
    assert b["scored_tokens"] == stream_loss(Uniform(97), TokenStream(valid), 16)["tokens"]
    # the pattern is a bigram pattern: the bigram must beat the unigram by far
    assert b["bigram"] < 0.6 * b["unigram"]
    np.testing.assert_allclose(b["unigram"], math.log(97), rtol=0.1)  # the pattern cycles through the vocabulary


@pytest.mark.parametrize("n_windows,cap", [(10, 3), (7, 7), (5, 100)])
def test_window_choice_is_even_and_within_the_stream(tmp_path, n_windows, cap):
    stream = TokenStream(synthetic_stream(tmp_path / "s.bin", n_tokens=n_windows * 16 + 1, vocab=97))
    ids = stream.eval_window_ids(16, cap * 16)
    assert len(ids) == min(cap, n_windows) and ids == sorted(set(ids)) and ids[-1] < n_windows
