"""Evaluation of (pruned) language models: perplexity per the SparseGPT protocol."""
