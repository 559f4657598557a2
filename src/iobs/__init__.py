"""iobs: the Iterative Optimal Brain Surgeon, replicated, and a toolkit for second-order iterative pruning."""

__version__ = "0.1.0"
