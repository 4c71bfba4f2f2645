"""pvs: Small LLMs, pruning vs. training from scratch, reproduced at any scale.

Modules: config (dataclass configs), tiers (named scales), model (Llama shapes), corpus / tokenize
(offline text and token shards), train (the recipe), perplexity (held-out loss), prune (every
method), downstream (lm-eval tasks), cli (the `pvs` command).
"""
__version__ = "0.1.0"

