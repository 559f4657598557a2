"""Layer-wise Hessians H = (2/N) sum_n X_n^T X_n of the inputs of nn.Linear modules, gathered by forward hooks.

Convention (the SparseGPT reference's): N counts calibration SEQUENCES, not tokens; X_n is sequence n's
[tokens, in_features] input. H is kept as a running average in float32, H <- H * N/(N+b) + (2/(N+b)) X_b^T X_b
for a mini-batch of b sequences, so its magnitude never grows with the amount of calibration data. The count b
comes from the caller (the driver knows its mini-batch size), because layers may flatten [b, L, d] to [b*L, d]
before a Linear (OPT's MLP does), which hides the sequence count from the hook.
A Linear called several times per forward (weight sharing) gets every call's inputs added with the same b.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


class HessianAccumulator:
    """Running-average Hessian of one Linear's inputs. hessian: Tensor[in, in] float32 on `device`."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu"):
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.sequences = 0

    @torch.no_grad()
    def add(self, inputs: torch.Tensor, sequences: int) -> None:
        """Fold in one mini-batch: inputs Tensor[..., in] (any dtype) holding `sequences` sequences."""
        if sequences < 1:
            raise ValueError("sequences must be >= 1: call set_batch_sequences before each mini-batch")
        x = inputs.reshape(-1, inputs.shape[-1]).to(self.hessian.device, torch.float32)
        total = self.sequences + sequences
        self.hessian.mul_(self.sequences / total).addmm_(x.T, x, alpha=2.0 / total)
        self.sequences = total


@contextmanager
def hessian_hooks(linears: dict[str, nn.Linear], device: torch.device | str
                  ) -> Iterator[tuple[dict[str, HessianAccumulator], Callable[[int], None]]]:
    """Hook every Linear in `linears` while the block runs; yields (accumulators by name, set_batch_sequences).

    Call set_batch_sequences(b) before each mini-batch forward (run_layer's on_batch does this).
    """
    accumulators = {name: HessianAccumulator(lin.in_features, device) for name, lin in linears.items()}
    batch = {"sequences": 0}

    def make_hook(acc: HessianAccumulator):
        def hook(module, args, output):
            acc.add(args[0].detach(), batch["sequences"])
        return hook

    def set_batch_sequences(sequences: int) -> None:
        batch["sequences"] = sequences

    handles = [lin.register_forward_hook(make_hook(accumulators[name])) for name, lin in linears.items()]
    try:
        yield accumulators, set_batch_sequences
    finally:
        for h in handles:
            h.remove()
