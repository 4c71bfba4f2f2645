"""Tokenizer and packed token shards.

A byte-level BPE is trained offline on the pretrain split (or a pretrained Hugging Face
tokenizer is used); every split is tokenized once into a flat memory-mapped array of token
ids (documents joined by the end-of-text token) that every run reuses.

    tok = prepare_tokenizer(corpus_dir, data_cfg, tok_dir)
    paths = prepare_shards(corpus_dir, tok, tok_dir)        # {'pretrain': Path, 'valid.wiki': Path, ...}
    stream = TokenStream(paths['pretrain'])
    x, y = stream.batch(step=0, batch_size=16, seq_len=256, seed=0)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from pvs.errors import PvsError, check
from pvs.records import atomic_write_bytes, atomic_write_json, sha256_file

EOT = "<|endoftext|>"


def _iter_texts(corpus_dir: Path, split: str, source: str | None = None):
    path = corpus_dir / f"{split}.jsonl"
    check(path.is_file(), f"corpus split {str(path)!r} is missing; run `pvs data` first")
    with open(path) as f:
        docs = (json.loads(line) for line in f)
        if source is None:
            yield from (doc["text"] for doc in docs)
            return
        # one source's held-out text in document-id order, so what is scored does not depend on how
        # the split file happens to be ordered
        yield from (doc["text"] for doc in sorted((d for d in docs if d["source"] == source),
                                                  key=lambda d: d.get("id", "")))


def prepare_tokenizer(corpus_dir: str | Path, data_cfg, tok_dir: str | Path, pretrained: str | None = None):
    """Train (once) or load the tokenizer named by ``data_cfg.tokenizer``; return a transformers fast tokenizer.

    A pretrained tokenizer (``data_cfg.tokenizer`` other than 'bpe') loads from ``pretrained`` when given
    (the folder the caller resolved a released parent's name to: pvs.parents.tokenizer_source), else from
    ``data_cfg.tokenizer`` itself (a Hugging Face id or a local path)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    corpus_dir, tok_dir = Path(corpus_dir), Path(tok_dir)
    if data_cfg.tokenizer != "bpe":
        source = pretrained or data_cfg.tokenizer
        try:
            return AutoTokenizer.from_pretrained(source)
        except OSError as e:
            raise PvsError(f"tokenizer {data_cfg.tokenizer!r} could not be loaded ({str(e).splitlines()[0]}); "
                           f"use 'bpe' or a local directory / Hugging Face id") from None
    if (tok_dir / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(tok_dir)

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check(data_cfg.vocab_size >= 300, f"data.vocab_size={data_cfg.vocab_size} must be >= 300 "
                                      "(256 byte symbols + merges + specials)")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=data_cfg.vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_iter_texts(corpus_dir, "pretrain"), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOT, bos_token=EOT, unk_token=None,
                                  pad_token=EOT)
    tmp = tok_dir.with_name(tok_dir.name + ".tmp")
    tok.save_pretrained(tmp)
    tmp.rename(tok_dir) if not tok_dir.exists() else None
    return PreTrainedTokenizerFast.from_pretrained(tok_dir)


def byte_tokenizer():
    """A tokenizer that needs no training and no download: one token per byte (256) plus ``<eos>``, small
    enough for a tiny model (tests and benchmarks use it with random-weight models)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<eos>"] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")


def write_random_shard(path: str | Path, n_tokens: int, vocab: int, seed: int = 0) -> Path:
    """A shard of uniform random token ids in the format prepare_shards writes (benchmarks and timings need
    batches of the right shape, not text)."""
    path = Path(path)
    ids = np.random.default_rng(seed).integers(0, vocab, n_tokens).astype(np.uint16 if vocab <= 65535 else np.uint32)
    path.write_bytes(ids.tobytes())
    atomic_write_json(path.with_suffix(".json"), {"tokens": int(ids.size), "dtype": str(ids.dtype), "sha256": "random"})
    return path


def _encode_docs(texts, tok) -> np.ndarray:
    eot = tok.eos_token_id
    check(eot is not None, "tokenizer has no end-of-text (eos) token; pvs joins documents with it")
    dtype = np.uint16 if len(tok) <= 65535 else np.uint32
    chunks, batch = [], []

    def flush():
        if batch:
            for ids in tok(batch, add_special_tokens=False)["input_ids"]:
                chunks.append(np.asarray(ids + [eot], dtype=dtype))
            batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= 256:
            flush()
    flush()
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)


def prepare_shards(corpus_dir: str | Path, tok, tok_dir: str | Path) -> dict[str, Path]:
    """Tokenize every split once into ``tok_dir/<split>.bin`` (held-out text also per source as
    ``valid.<source>.bin``); return the paths. Existing shards are reused."""
    corpus_dir, tok_dir = Path(corpus_dir), Path(tok_dir)
    with open(corpus_dir / "valid.jsonl") as f:
        sources = sorted({json.loads(line)["source"] for line in f})
    jobs = {s: (s, None) for s in ("pretrain", "retrain", "calib", "valid")}
    jobs.update({f"valid.{src}": ("valid", src) for src in sources})
    paths = {}
    for name, (split, source) in jobs.items():
        path = tok_dir / f"{name}.bin"
        if not path.is_file():
            ids = _encode_docs(_iter_texts(corpus_dir, split, source), tok)
            atomic_write_bytes(path, ids.tobytes())
            atomic_write_json(path.with_suffix(".json"), {
                "split": split, "source": source, "tokens": int(ids.size), "dtype": str(ids.dtype),
                "sha256": sha256_file(path)})
        paths[name] = path
    if not (tok_dir / SHARDS_MANIFEST).is_file():  # written last: the folder is complete without its corpus
        atomic_write_json(tok_dir / SHARDS_MANIFEST, {"shards": sorted(paths)})
    return paths


SHARDS_MANIFEST = "shards.json"
"""Names of a tokens folder's shards, written once all exist: with it and the tokenizer, the folder alone is
the study's data (a GPU machine gets the shards copied, not the corpus; ``carried_shards``)."""


def carried_shards(tok_dir: str | Path) -> dict[str, Path] | None:
    """The shards of a complete tokens folder (its manifest, every shard and its .json present), else None."""
    tok_dir = Path(tok_dir)
    manifest = tok_dir / SHARDS_MANIFEST
    if not (manifest.is_file() and (tok_dir / "tokenizer.json").is_file()):
        return None
    paths = {name: tok_dir / f"{name}.bin" for name in json.loads(manifest.read_text())["shards"]}
    complete = all(p.is_file() and p.with_suffix(".json").is_file() for p in paths.values())
    return paths if complete else None


class TokenStream:
    """A memory-mapped flat array of token ids cut into fixed windows, sampled in a seeded order.

    The order is a pure function of (seed, step), so a resumed run sees exactly the batches an
    uninterrupted run would; a budget larger than the stream repeats it in epochs (each epoch
    reshuffled), and ``epochs(tokens)`` says how many.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        check(path.is_file(), f"token shard {str(path)!r} is missing; run `pvs data` first")
        meta = json.loads(path.with_suffix(".json").read_text())
        self.path, self.meta = path, meta
        self.ids = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")

    def __len__(self) -> int:
        return int(self.ids.size)

    def n_windows(self, seq_len: int) -> int:
        return max(0, (len(self) - 1) // seq_len)

    def epochs(self, tokens: int, seq_len: int) -> float:
        """How many passes over this stream a budget of ``tokens`` takes."""
        n = self.n_windows(seq_len) * seq_len
        check(n > 0, f"token shard {self.path.name} has {len(self)} tokens: too short for seq_len={seq_len}")
        return tokens / n

    def window(self, index: int, seq_len: int) -> np.ndarray:
        start = index * seq_len
        return np.asarray(self.ids[start: start + seq_len + 1], dtype=np.int64)

    def sample_indices(self, start: int, count: int, seq_len: int, seed: int) -> list[int]:
        """Window indices of global samples ``start .. start+count-1`` (epoch-wise seeded permutations)."""
        n = self.n_windows(seq_len)
        check(n > 0, f"token shard {self.path.name} has {len(self)} tokens: too short for seq_len={seq_len}")
        out, perms = [], {}
        for g in range(start, start + count):
            epoch, pos = divmod(g, n)
            if epoch not in perms:
                rng = np.random.default_rng([seed, epoch])
                perms[epoch] = rng.permutation(n)
            out.append(int(perms[epoch][pos]))
        return out

    def batch(self, step: int, batch_size: int, seq_len: int, seed: int, part: slice | None = None):
        """Inputs and next-token targets [b, seq_len] for optimizer step ``step`` (``part`` selects
        the micro-batch / process share of the global batch)."""
        idx = self.sample_indices(step * batch_size, batch_size, seq_len, seed)
        if part is not None:
            idx = idx[part]
        w = torch.from_numpy(np.stack([self.window(i, seq_len) for i in idx]))
        return w[:, :-1], w[:, 1:]

    def eval_window_ids(self, seq_len: int, max_tokens: int = 0) -> list[int]:
        """Which non-overlapping windows are scored: all of them, or, when ``max_tokens`` caps the count,
        that many windows spread evenly over the whole stream (never just its beginning)."""
        n_all = self.n_windows(seq_len)
        n = n_all if not max_tokens else min(n_all, math.ceil(max_tokens / seq_len))
        return [i * n_all // n for i in range(n)] if n else []

    def eval_windows(self, seq_len: int, max_tokens: int = 0):
        """The scored windows (``eval_window_ids``) as (input, target) pairs: the paper's perplexity
        protocol of non-overlapping windows, each predicting ``seq_len`` tokens."""
        for i in self.eval_window_ids(seq_len, max_tokens):
            w = torch.from_numpy(self.window(i, seq_len))
            yield w[:-1], w[1:]
