"""I-OBS for language models: rounds of (Hessian-aware projection onto the sparsity target, gradient steps)."""
