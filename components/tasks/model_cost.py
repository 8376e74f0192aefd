"""What a model costs: its parameters, its forward pass's floating-point operations per sample, and the time,
speed and peak memory of training it.

FLOPs are counted by torch's own `FlopCounterMode`: 2 per multiply-add of the matrix products and convolutions
(fvcore counts 1); element-wise operations (biases, activations, normalisation) are not counted.
"""

from __future__ import annotations

import torch


def parameter_count(model: torch.nn.Module) -> int:
    """Every parameter's elements, trainable or not."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_sample(model: torch.nn.Module, features: dict[str, torch.Tensor]) -> float:
    """The forward pass's FLOPs on one batch of `features`, divided by its size."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(features)
    return counter.get_total_flops() / len(next(iter(features.values())))


def peak_memory_mb(device: torch.device) -> float:
    """On a GPU, the most memory tensors took on `device` since the last call (MiB; the peak is reset); elsewhere the
    process's peak resident set so far (MiB), which only grows."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def training_cost(history: list[dict[str, float]]) -> dict[str, float]:
    """A training's cost from its per-epoch metrics: `training_seconds` (the epochs' time), `training_samples_per_s`
    (the samples trained over that time) and `training_peak_memory_mb` (the largest epoch's)."""
    seconds = sum(row["epoch_seconds"] for row in history)
    return {"training_seconds": seconds,
            "training_samples_per_s": sum(row["train_samples"] for row in history) / seconds,
            "training_peak_memory_mb": max(row["peak_memory_mb"] for row in history)}
