"""Layer-wise pruning: sparsity targets (sparsity.py) and solvers for one linear layer (solvers/)."""
