"""pvs: Small LLMs, pruning vs. training from scratch, reproduced at any scale.

Layers, each importing only from those above it (tests/test_imports.py checks):
  base     errors, paths (cache / runs / figures folders), records (provenance, atomic writes), shape
           (ModelShape, parameter and FLOP counts), config and tiers (settings), experiments (the
           experiment list and its arms), stats, chance
  data     corpus_sources, corpus (offline text), tokens (tokenizer, token shards), tasks (lm-eval tasks)
  model    model (Llama models from a shape), hetero (per-layer widths), checkpoint (model folders, masks),
           parents (released and local parents)
  prune    prune (every method behind one registry)
  train    train (the recipe, resumable), lm_loss (the loss in blocks), cpu_attention (small-head
           attention on CPU)
  eval     perplexity (held-out loss), packed_lm, downstream (lm-eval)
  report   catchup, claims, regime, report, report_tables, report_figures, report_claims
  top      stages (cached data / parent / eval stages), study (the experiments' arms), plan, walltime,
           notebooks, cli
"""
__version__ = "0.1.0"
