"""The settings of the I-OBS gradient steps, in a module of their own: it imports no torch, so the CLI's help
texts and option checks can quote these defaults without loading it (see iobs.cli.parser)."""

from __future__ import annotations

from dataclasses import dataclass

from iobs.errors import ConfigError


@dataclass(frozen=True)
class StepConfig:
    optimizer: str = "adam"  # "adam" (the DAG default, chosen on validation) or "sgd" (plain, no momentum)
    lr: float = 3e-4  # with the DAG default optimizer adam, chosen on validation (README, "I-OBS step defaults")
    steps: int = 10
    micro_batch: int = 8  # sequences per forward/backward; gradients of a step are averaged over the whole batch
    masked: bool = False  # True: pruned weights stay zero (gradient and weight masked)
    max_grad_norm: float | None = 1.0  # clip the global gradient norm (None = no clipping)
    # Memory plan (README "Memory and time per model"); neither changes the result beyond float rounding.
    gradient_checkpointing: bool = False  # keep only each decoder layer's inputs; recompute the layer in backward
    offload_optimizer: bool = False  # float32 masters, their gradients and the optimizer state in host memory

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"unknown optimizer '{self.optimizer}' (choose 'sgd' or 'adam')")
        if self.steps < 0 or self.lr < 0 or self.micro_batch < 1:
            raise ConfigError("gradient steps need steps >= 0, lr >= 0 and micro_batch >= 1")
