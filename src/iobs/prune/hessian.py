"""Layer-wise Hessians H = (2/N) sum_n X_n^T X_n of the inputs of nn.Linear modules, gathered by forward hooks.

Convention (the SparseGPT reference's): N counts calibration SEQUENCES, not tokens; X_n is sequence n's
[tokens, in_features] input. H is kept as a running average in float32, H <- H * N/(N+b) + (2/(N+b)) X_b^T X_b
for a mini-batch of b sequences, so its magnitude never grows with the amount of calibration data. The count b
comes from the caller (the driver knows its mini-batch size), because layers may flatten [b, L, d] to [b*L, d]
before a Linear (OPT's MLP does), which hides the sequence count from the hook.
A Linear called several times per forward (weight sharing) gets every call's inputs added with the same b.

LayerHessians (what the driver uses) adds three savings, none of which changes a single bit of any Hessian:
- Linears that read the same input tensor (q/k/v; gate/up; Phi's q/k/v/fc1) share one accumulator. The groups
  come from the module graph as it runs: in the first mini-batch, a Linear whose input is the very tensor an
  earlier Linear of that batch read (same storage, shape, strides and version, with a reference held so the
  memory cannot be reused) joins that Linear's group. Later batches check that this still holds.
- symmetric accumulation: only the blocks on and below the diagonal of X^T X are computed (about 5/8 of the
  flops for 4 column blocks, 9/16 for 8); the upper triangle is mirrored once when the Hessian is read. Every
  entry is the same sum of the same products as in the full X^T X; on MKL at OPT-125M sizes it is bit-identical
  (benchmarks/bench_engine.py checks it), in general equal to float32 rounding.
- early stop: once the last Linear of the first batch's call order has been fed in a later batch, the rest of
  the layer's forward (e.g. OPT's fc2 product and residual, 30% of the layer) is skipped by raising StopLayer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from iobs.errors import IobsError


class StopLayer(Exception):
    """Raised by a Hessian hook when the rest of the layer's forward cannot feed any Hessian (see run_layer)."""


def _symmetric_blocks(in_features: int) -> int:
    """Column blocks for the lower-triangle product: enough to skip most of the upper triangle, wide enough
    (>= 192 columns) for the matmul to stay efficient. 1 = the plain full product."""
    return max(1, min(8, in_features // 192))


class HessianAccumulator:
    """Running-average Hessian of one Linear's inputs. hessian: Tensor[in, in] float32 on `device`.

    symmetric=True computes only the lower block triangle of each X^T X; reading .hessian mirrors it (once per
    change), so callers always see the full symmetric matrix.
    """

    def __init__(self, in_features: int, device: torch.device | str = "cpu", symmetric: bool = True):
        self._hessian = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.sequences = 0
        blocks = _symmetric_blocks(in_features) if symmetric else 1
        step = -(-in_features // blocks)
        self._bounds = [(start, min(start + step, in_features)) for start in range(0, in_features, step)]
        self._mirrored = True

    @property
    def hessian(self) -> torch.Tensor:
        if not self._mirrored:
            h = self._hessian
            upper = torch.ones_like(h, dtype=torch.bool).triu_(1)
            h[upper] = h.T[upper]
            self._mirrored = True
        return self._hessian

    @torch.no_grad()
    def add(self, inputs: torch.Tensor, sequences: int) -> None:
        """Fold in one mini-batch: inputs Tensor[..., in] (any dtype) holding `sequences` sequences."""
        if sequences < 1:
            raise ValueError("sequences must be >= 1: call set_batch_sequences before each mini-batch")
        h = self._hessian
        x = inputs.reshape(-1, inputs.shape[-1]).to(h.device, torch.float32)
        total = self.sequences + sequences
        h.mul_(self.sequences / total)
        if len(self._bounds) == 1:
            h.addmm_(x.T, x, alpha=2.0 / total)
        else:  # row block i of the lower triangle: X_i^T [X_0 ... X_i]
            for start, end in self._bounds:
                h[start:end, :end].addmm_(x[:, start:end].T, x[:, :end], alpha=2.0 / total)
            self._mirrored = False
        self.sequences = total


@contextmanager
def hessian_hooks(linears: dict[str, nn.Linear], device: torch.device | str
                  ) -> Iterator[tuple[dict[str, HessianAccumulator], Callable[[int], None]]]:
    """Hook every Linear in `linears` while the block runs; yields (accumulators by name, set_batch_sequences).

    One accumulator per Linear, every call fed (no grouping, no early stop): the simple reference of
    LayerHessians. Call set_batch_sequences(b) before each mini-batch forward (run_layer's on_batch does this).
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


def _identity(x: torch.Tensor) -> tuple:
    """What makes two hook arguments the same tensor while a reference to the first is held."""
    try:
        version = x._version  # an in-place change between the two calls would make them different inputs
    except RuntimeError:  # inference-mode tensors have no version counter
        version = None
    return (x.data_ptr(), x.device, x.dtype, tuple(x.shape), x.stride(), version)


class LayerHessians:
    """The Hessians of one decoder layer's Linears, one per distinct input (see the module docstring).

    Use: with lh.hooks(): run_layer(layer, inputs, device, write_outputs=False, on_batch=lh.start_batch,
    until=StopLayer). Then lh.groups lists the Linear names that share an input (each group in first-call
    order; Linears never called form groups of one, with a zero Hessian), and lh.hessian(name) the shared
    float32 [in, in] tensor. stop_early=False runs every forward to the end; symmetric=False uses full products.
    """

    def __init__(self, linears: dict[str, nn.Linear], device: torch.device | str, *, stop_early: bool = True,
                 symmetric: bool = True):
        self.linears = linears
        self.device = device
        self.stop_early = stop_early
        self.symmetric = symmetric
        self.leader: dict[str, str] = {}  # name -> the name whose accumulator it uses (itself for a leader)
        self.accumulators: dict[str, HessianAccumulator] = {}
        self._batches = 0
        self._sequences = 0
        self._first_calls: list[str] = []  # call order of the first batch
        self._calls: list[str] = []  # call order of the current batch
        self._seen: dict[tuple, tuple[str, torch.Tensor]] = {}  # identity -> (leader, held input), this batch
        self._batch_identity: dict[str, tuple] = {}  # leader -> identity of its input, this batch

    def start_batch(self, sequences: int) -> None:
        if self._batches == 1:
            self._close_first_batch()
        self._batches += 1
        self._sequences = sequences
        self._calls = []
        self._seen.clear()
        self._batch_identity.clear()

    def _accumulator(self, name: str) -> HessianAccumulator:
        if name not in self.accumulators:
            self.accumulators[name] = HessianAccumulator(self.linears[name].in_features, self.device,
                                                         symmetric=self.symmetric)
        return self.accumulators[name]

    def _hook(self, name: str, x: torch.Tensor) -> None:
        x = x.detach()
        first_batch = self._batches == 1
        call = len(self._calls)
        self._calls.append(name)
        identity = _identity(x)
        if first_batch:
            repeated = name in self.leader
            shared = self._seen.get(identity)
            if repeated:  # weight sharing: every call is fed, and such a Linear is never grouped
                if self.leader[name] != name:
                    raise IobsError(f"'{name}' is called twice per forward and also reads another Linear's "
                                    "input: Hessian groups cannot be derived; report this architecture")
                self._accumulator(name).add(x, self._sequences)
            elif shared is not None and self._first_calls_of(shared[0]) == 1:
                self.leader[name] = shared[0]
            else:
                self.leader[name] = name
                self._accumulator(name).add(x, self._sequences)
            self._seen.setdefault(identity, (self.leader[name], x))  # held: its memory cannot be reused
            return
        if call >= len(self._first_calls) or self._first_calls[call] != name:
            raise IobsError(f"the Linears of this layer were called in a different order in mini-batch "
                            f"{self._batches} than in the first ('{name}' at call {call}): Hessian groups and the "
                            "early stop assume a fixed call order; use stop_early=False")
        leader = self.leader[name]
        if leader == name:
            self._accumulator(name).add(x, self._sequences)
            self._batch_identity[name] = identity
            self._seen[identity] = (name, x)
        elif self._batch_identity.get(leader) != identity:
            raise IobsError(f"'{name}' shared the input of '{leader}' in the first mini-batch but not in "
                            f"mini-batch {self._batches}: report this architecture")
        if self.stop_early and call == len(self._first_calls) - 1:
            raise StopLayer

    def _first_calls_of(self, name: str) -> int:
        return self._calls.count(name)

    def _close_first_batch(self) -> None:
        if self._first_calls:
            return
        self._first_calls = list(self._calls)
        for name, leader in self.leader.items():
            if leader != name and self._first_calls.count(leader) > 1:
                raise IobsError(f"'{name}' reads the input of '{leader}', which is called several times per "
                                "forward: Hessian groups cannot be derived; report this architecture")

    @contextmanager
    def hooks(self) -> Iterator["LayerHessians"]:
        def make_hook(name: str):
            def hook(module, args):
                self._hook(name, args[0])
            return hook

        handles = [lin.register_forward_pre_hook(make_hook(name)) for name, lin in self.linears.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._seen.clear()  # drop the held inputs

    @property
    def groups(self) -> list[list[str]]:
        """Names sharing one Hessian, groups in first-call order, members in call order; then uncalled Linears."""
        if self._batches == 1:
            self._close_first_batch()
        groups: dict[str, list[str]] = {}
        for name, leader in self.leader.items():
            groups.setdefault(leader, []).append(name)
        uncalled = [[name] for name in self.linears if name not in self.leader]
        return list(groups.values()) + uncalled

    def hessian(self, name: str) -> torch.Tensor:
        """float32 [in, in] on the device; the same tensor object for every member of a group."""
        leader = self.leader.get(name, name)
        return self._accumulator(leader).hessian
