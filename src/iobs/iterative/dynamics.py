"""Mask dynamics between I-OBS rounds: which weight positions changed their kept/pruned state, and how close the
weights that came back (regrew) were to the pruning threshold."""

from __future__ import annotations

import torch

from iobs.errors import IobsError


def _check_same_layout(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    """Masks of two rounds must cover the same Linears with the same shapes (they come from files when resuming)."""
    if set(before) != set(after):
        raise IobsError(f"the masks of two rounds name different Linears (e.g. {sorted(set(before) ^ set(after))[:3]}):"
                        " resume from the masks of the same model, sparsity and variant")
    for name, mask in after.items():
        if before[name].shape != mask.shape:
            raise IobsError(f"mask '{name}' has shape {tuple(before[name].shape)} in one round and {tuple(mask.shape)}"
                            " in the next: resume from the masks of the same model")


def changed_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict:
    """Per Linear and in total: the fraction of positions whose kept/pruned state differs (bool masks, True = kept)."""
    _check_same_layout(before, after)
    per_layer, changed, total = {}, 0, 0
    for name in after:
        diff = int((before[name] != after[name]).sum())
        per_layer[name] = diff / after[name].numel()
        changed += diff
        total += after[name].numel()
    return {"total": changed / max(total, 1), "per_layer": per_layer}


def regrowth(previous: dict[str, torch.Tensor], current: dict[str, torch.Tensor],
             pre_projection: dict[str, torch.Tensor]) -> dict:
    """How far regrown weights were from the threshold when the projection chose them.

    previous/current: bool masks (True = kept) of rounds r-1 and r; pre_projection: the weights [out, in] that the
    round-r projection started from. The layer's threshold is the largest |w_pre| that a magnitude projection to
    the same number of pruned weights would prune (a layer-wide magnitude view of a Hessian-aware choice, also for
    N:M); regrown = pruned in r-1, kept in r. Returns the count of regrown positions and the mean and median
    (torch's: the lower middle for an even count) of |w_pre| / threshold over them (1.0 = exactly at the threshold).
    """
    _check_same_layout(previous, current)
    ratios = []
    count = 0
    for name, mask in current.items():
        regrown = mask & ~previous[name]
        count += int(regrown.sum())
        if regrown.any():
            magnitude = pre_projection[name].abs().float()
            pruned = int((~mask).sum())
            flat = magnitude.reshape(-1)
            threshold = flat.kthvalue(pruned).values if pruned else flat.min()
            threshold = threshold.clamp_min(torch.finfo(torch.float32).tiny)
            ratios.append(magnitude[regrown] / threshold)
    if not ratios:
        return {"regrown": 0, "ratio_mean": None, "ratio_median": None}
    joined = torch.cat(ratios)
    return {"regrown": count, "ratio_mean": float(joined.mean()), "ratio_median": float(joined.median())}
