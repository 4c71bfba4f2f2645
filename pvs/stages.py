"""The study's stages as functions of a RunConfig, each cached on disk by a hash of what it depends on.

    data      corpus splits -> tokenizer -> token shards          data/cache/{corpus,tokens}/<hash>/
    pretrain  the parent, trained from random init on P tokens    runs/<tier>/parent-<hash>/
    evaluate  validation loss over every held-out source          <model run dir>/eval-<key>.json
    baselines unigram / bigram fitted on P tokens, same text     data/cache/tokens/<hash>/baselines-<key>.json

A stage whose output exists is skipped, so an interrupted pipeline resumes where it stopped;
a changed setting changes the hash and re-runs only what depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pvs.config import RunConfig, config_hash, to_dict
from pvs.errors import PvsError, check
from pvs.paths import cache_root, runs_root
from pvs.records import code_version, read_json, write_record


@dataclass
class DataHandle:
    """Where a config's prepared data lives."""

    corpus_dir: Path
    tok_dir: Path
    tokenizer: object
    shards: dict


def _corpus_key(cfg: RunConfig) -> dict:
    from pvs.corpus import CORPUS_VERSION  # a new corpus version must not reuse the old token shards
    d = to_dict(cfg.data)
    return {**{k: d[k] for k in ("source", "dclm_dataset", "max_docs", "split_seed", "retrain_frac",
                                 "calib_frac", "valid_frac")}, "corpus_version": CORPUS_VERSION}


def corpus_dir(cfg: RunConfig, cache: Path | None = None) -> Path:
    """Where the corpus splits of ``cfg.data`` live (keyed by what the corpus depends on)."""
    return Path(cache or cache_root()) / "corpus" / config_hash(_corpus_key(cfg))


def tokens_dir(cfg: RunConfig, cache: Path | None = None) -> Path:
    """Where the tokenizer and token shards of ``cfg.data`` live (the corpus key plus the tokenizer)."""
    key = {**_corpus_key(cfg), "tokenizer": cfg.data.tokenizer, "vocab_size": cfg.data.vocab_size}
    return Path(cache or cache_root()) / "tokens" / config_hash(key)


CHARS_PER_TOKEN = 4.5
"""English web text per token of a ~50k BPE (DCLM with the Llama-3 / SmolLM2 tokenizers: 4.3-4.7)."""


def dclm_chars_needed(cfg: RunConfig) -> tuple[int, int]:
    """(tokens, characters) a streamed corpus must hold so the pretrain split has P tokens and the retrain
    split N (the document fractions cut it; the larger of the two needs decides)."""
    d = cfg.data
    pre_share = 1 - d.retrain_frac - d.calib_frac - d.valid_frac
    need = max(cfg.budget.pretrain_tokens / pre_share, cfg.budget.retrain_tokens / max(d.retrain_frac, 1e-9))
    return int(need), int(need * CHARS_PER_TOKEN)


def prepare_data(cfg: RunConfig, cache: Path | None = None) -> DataHandle:
    """Corpus splits, tokenizer and token shards for ``cfg.data`` (built once, then reused). A complete tokens
    folder is enough without its corpus (``pvs.tokens.carried_shards``: shards copied to a GPU machine)."""
    from pvs.corpus import build_corpus
    from pvs.parents import tokenizer_source
    from pvs.tokens import carried_shards, prepare_shards, prepare_tokenizer

    corpus, tok_dir = corpus_dir(cfg, cache), tokens_dir(cfg, cache)
    shards = carried_shards(tok_dir) if cfg.data.tokenizer == "bpe" else None
    if shards is not None and not (corpus / "manifest.json").is_file():
        tok = prepare_tokenizer(corpus, cfg.data, tok_dir)  # the folder's own trained tokenizer
        return DataHandle(corpus, tok_dir, tok, shards)
    if cfg.data.source == "dclm":
        need, chars = dclm_chars_needed(cfg)
        try:
            build_corpus(corpus, cfg.data, max_chars=chars)
        except PvsError as e:
            raise PvsError(f"tier {cfg.tier} needs {need / 1e9:.2f}B tokens of {cfg.data.dclm_dataset} (P = "
                           f"{cfg.budget.pretrain_tokens / 1e9:.2f}B of pretraining text, N = "
                           f"{cfg.budget.retrain_tokens / 1e9:.2f}B of retraining text): {e}") from None
    else:
        build_corpus(corpus, cfg.data)
    tok = prepare_tokenizer(corpus, cfg.data, tok_dir, pretrained=tokenizer_source(cfg.data.tokenizer))
    shards = prepare_shards(corpus, tok, tok_dir)
    return DataHandle(corpus, tok_dir, tok, shards)


def parent_shape(cfg: RunConfig, data: DataHandle):
    """The tier's parent shape with the vocabulary the tokenizer actually has."""
    from pvs.shape import replace
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
    return Path(runs or runs_root()) / cfg.tier / f"parent-{config_hash(key)}"


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
                        "tokenizer_dir": data.tok_dir.name}, tokenizer=data.tokenizer)
    return out


def eval_key(cfg: RunConfig, run_dir: Path, data: DataHandle) -> dict:
    """Everything a validation loss depends on: the weights, the evaluation settings, the scored text and
    the protocol. The cached result is keyed by it, so a changed setting is never answered by an old number."""
    from pvs.perplexity import PROTOCOL, heldout_sources
    from pvs.records import sha256_dir
    return {"checkpoint": sha256_dir(Path(run_dir) / "model", "*.safetensors"), "eval": to_dict(cfg.eval),
            "text": {src: read_json(Path(p).with_suffix(".json"))["sha256"]
                     for src, p in heldout_sources(data.shards).items()},
            "protocol": PROTOCOL}


def evaluate(cfg: RunConfig, run_dir: Path, data: DataHandle, overwrite: bool = False) -> dict:
    """Validation loss and per-source losses of the model in ``run_dir/model``, cached in
    ``run_dir/eval-<key>.json`` (key: ``eval_key``); ``overwrite`` recomputes it."""
    from pvs.checkpoint import load_model
    from pvs.perplexity import evaluate_heldout

    model_dir = Path(run_dir) / "model"
    check(model_dir.is_dir(), f"no trained model in {str(model_dir)!r}; run its training stage first")
    key = eval_key(cfg, run_dir, data)
    path = Path(run_dir) / f"eval-{config_hash(key)}.json"
    if path.is_file() and not overwrite:
        return read_json(path)
    import torch
    code = code_version()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU machine evaluates where it trains (fp32)
    result = evaluate_heldout(load_model(model_dir, "model").to(device), data.shards, cfg.eval)
    result.update(code=code, key=key, eval_config=to_dict(cfg.eval), device=device)
    return write_record(path, result, overwrite=overwrite)


def baselines(cfg: RunConfig, data: DataHandle) -> dict:
    """Unigram and bigram losses fitted on the parent's P pretraining tokens and scored on the validation
    loss's own tokens (cached beside the token shards)."""
    from pvs.perplexity import count_baselines
    from pvs.tokens import TokenStream
    key = {"P": cfg.budget.pretrain_tokens, "eval": to_dict(cfg.eval), "protocol": "count-baselines-v1"}
    path = data.tok_dir / f"baselines-{config_hash(key)}.json"
    if path.is_file():
        return read_json(path)
    res = count_baselines(TokenStream(data.shards["pretrain"]), cfg.budget.pretrain_tokens, data.shards, cfg.eval,
                          len(data.tokenizer), TokenStream(data.shards["calib"]))
    return write_record(path, {**res, "key": key})
