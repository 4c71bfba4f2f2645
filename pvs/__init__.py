"""pvs: Small LLMs, pruning vs. training from scratch, reproduced at any scale.

Modules: config (dataclass configs), tiers (named scales), model (Llama shapes), corpus / tokenize
(offline text and token shards), train (the recipe), perplexity (held-out loss), prune (every
method), downstream (lm-eval tasks), cli (the `pvs` command).
"""
__version__ = "0.1.0"

# registers pvs's per-layer-width model class (FLAP, Sheared LLaMA) with transformers' Auto classes,
# so AutoModelForCausalLM.from_pretrained loads pruned checkpoints without trust_remote_code
import pvs.prune.hetero  # noqa: E402,F401
