"""The study's stages as functions of a RunConfig, each cached on disk by a hash of what it depends on.

    data      corpus splits -> tokenizer -> token shards          data/cache/{corpus,tokens}/<hash>/
    pretrain  the parent, trained from random init on P tokens    runs/<tier>/parent-<hash>/
    evaluate  validation loss and per-source perplexity           <model run dir>/eval.json

A stage whose output exists is skipped, so an interrupted pipeline resumes where it stopped;
a changed setting changes the hash and re-runs only what depends on it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pvs.config import RunConfig, config_hash, to_dict
from pvs.errors import check
from pvs.records import REPO_ROOT, code_version, read_json, write_record

CACHE = Path(os.environ.get("PVS_CACHE", REPO_ROOT / "data" / "cache"))
RUNS = Path(os.environ.get("PVS_RUNS", REPO_ROOT / "runs"))


@dataclass
class DataHandle:
    """Where a config's prepared data lives."""

    corpus_dir: Path
    tok_dir: Path
    tokenizer: object
    shards: dict


def _corpus_key(cfg: RunConfig) -> dict:
    d = to_dict(cfg.data)
    return {k: d[k] for k in ("source", "dclm_dataset", "max_docs", "split_seed", "retrain_frac",
                              "calib_frac", "valid_frac")}


def prepare_data(cfg: RunConfig, cache: Path | None = None) -> DataHandle:
    """Corpus splits, tokenizer and token shards for ``cfg.data`` (built once, then reused)."""
    from pvs.corpus import build_corpus
    from pvs.tokens import prepare_shards, prepare_tokenizer

    cache = Path(cache or CACHE)
    corpus_dir = cache / "corpus" / config_hash(_corpus_key(cfg))
    build_corpus(corpus_dir, cfg.data)
    tok_key = {**_corpus_key(cfg), "tokenizer": cfg.data.tokenizer, "vocab_size": cfg.data.vocab_size}
    tok_dir = cache / "tokens" / config_hash(tok_key)
    tok = prepare_tokenizer(corpus_dir, cfg.data, tok_dir)
    shards = prepare_shards(corpus_dir, tok, tok_dir)
    return DataHandle(corpus_dir, tok_dir, tok, shards)


def parent_shape(cfg: RunConfig, data: DataHandle):
    """The tier's parent shape with the vocabulary the tokenizer actually has."""
    from pvs.model import replace
    return replace(cfg.parent, vocab=len(data.tokenizer))


def train_key(train_cfg) -> dict:
    """The training settings that determine a result (threads and logging cadence do not)."""
    d = to_dict(train_cfg)
    for k in ("threads", "log_every", "checkpoint_every"):
        d.pop(k)
    return d


def parent_dir(cfg: RunConfig, runs: Path | None = None) -> Path:
    key = {"parent": to_dict(cfg.parent), "data": to_dict(cfg.data), "train": train_key(cfg.train),
           "tokens": cfg.budget.pretrain_tokens}
    return Path(runs or RUNS) / cfg.tier / f"parent-{config_hash(key)}"


def pretrain(cfg: RunConfig, data: DataHandle, runs: Path | None = None) -> Path:
    """Train the parent from random init on P = budget.pretrain_tokens tokens of the pretrain split."""
    from pvs.model import build_model, param_counts
    from pvs.tokens import TokenStream
    from pvs.train import train

    out = parent_dir(cfg, runs)
    shape = parent_shape(cfg, data)
    model = build_model(shape, seed=cfg.train.seed)
    train(model, TokenStream(data.shards["pretrain"]), cfg.train, cfg.budget.pretrain_tokens, out,
          desc=f"pretrain parent ({cfg.tier})",
          extra_record={"config": to_dict(cfg), "shape": to_dict(shape), "params": param_counts(model),
                        "tokenizer_dir": str(data.tok_dir)})
    return out


def evaluate(cfg: RunConfig, run_dir: Path, data: DataHandle, overwrite: bool = False) -> dict:
    """Validation loss and perplexities of the model in ``run_dir/model`` (cached in ``run_dir/eval.json``)."""
    from transformers import AutoModelForCausalLM

    import pvs.prune  # noqa: F401  registers pvs's per-layer model class with the Auto classes
    from pvs.perplexity import evaluate_heldout
    from pvs.records import sha256_dir

    path = Path(run_dir) / "eval.json"
    if path.is_file() and not overwrite:
        return read_json(path)
    model_dir = Path(run_dir) / "model"
    check(model_dir.is_dir(), f"no trained model in {str(model_dir)!r}; run its training stage first")
    code = code_version()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    result = evaluate_heldout(model, data.shards, cfg.eval)
    result["code"] = code
    result["checkpoint"] = {"dir": str(model_dir), "sha256": sha256_dir(model_dir, "*.safetensors")}
    result["eval_config"] = to_dict(cfg.eval)
    result["data"] = {name: read_json(Path(p).with_suffix(".json")) for name, p in data.shards.items()
                      if name.startswith("valid")}
    return write_record(path, result, overwrite=overwrite)
