"""What a model costs: its parameters, its forward pass's floating-point operations per sample, and the time,
speed and peak memory of training it.

FLOPs are counted by torch's own `FlopCounterMode`: 2 per multiply-add of the matrix products and convolutions
(fvcore counts 1); element-wise operations (biases, activations, normalisation) are not counted. Recurrent layers
(LSTM, GRU) run as fused kernels that the counter does not see (mkldnn on CPU, cuDNN on GPU): theirs are counted
from their weight matrices, 2 per weight per time step, in place of whatever the counter saw of them.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.nn.utils.rnn import PackedSequence


def parameter_count(model: torch.nn.Module) -> int:
    """Every parameter's elements, trainable or not."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_sample(model: torch.nn.Module, features: dict[str, torch.Tensor]) -> float:
    """The forward pass's FLOPs on one batch of `features`, divided by its size."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    seen_before: dict[torch.nn.Module, int] = {}
    corrections: list[int] = []

    def before(layer: torch.nn.Module, inputs: tuple) -> None:
        seen_before[layer] = counter.get_total_flops()

    def after(layer: torch.nn.Module, inputs: tuple, output: Any) -> None:
        corrections.append(recurrent_flops(layer, inputs[0]) - (counter.get_total_flops() - seen_before.pop(layer)))

    recurrent = [layer for layer in model.modules() if isinstance(layer, torch.nn.RNNBase)]
    hooks = [hook for layer in recurrent
             for hook in (layer.register_forward_pre_hook(before), layer.register_forward_hook(after))]
    try:
        with counter:
            model(features)
    finally:
        for hook in hooks:
            hook.remove()
    return (counter.get_total_flops() + sum(corrections)) / len(next(iter(features.values())))


def recurrent_flops(layer: torch.nn.RNNBase, sequence: torch.Tensor | PackedSequence) -> int:
    """A recurrent layer's matrix products over `sequence`: 2 per weight (input, hidden and projection matrices of
    every layer and direction) per time step of every sequence."""
    steps = sequence.data.shape[0] if isinstance(sequence, PackedSequence) else sequence.shape[:-1].numel()
    return 2 * steps * sum(w.numel() for name, w in layer.named_parameters() if name.startswith("weight_"))


def peak_memory_mb(device: torch.device) -> float:
    """The most memory taken since the last call (MiB), and the peak reset: on a GPU by tensors on `device`,
    elsewhere the process's resident set (Linux; on other systems its peak so far, which only grows)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return peak / 2**20
    try:  # Linux: VmHWM, the peak resident set, which clear_refs "5" sets back to the current one
        peak_kib = int(re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)[1])
        Path("/proc/self/clear_refs").write_text("5")
        return peak_kib / 1024
    except OSError:  # no /proc
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def training_cost(history: list[dict[str, float]]) -> dict[str, float]:
    """A training's cost from its per-epoch metrics: `training_seconds` (the epochs' time), `training_samples_per_s`
    (the samples trained over that time) and `training_peak_memory_mb` (the largest epoch's)."""
    seconds = sum(row["epoch_seconds"] for row in history)
    return {"training_seconds": seconds,
            "training_samples_per_s": sum(row["train_samples"] for row in history) / seconds,
            "training_peak_memory_mb": max(row["peak_memory_mb"] for row in history)}


def wired_training_cost(inputs: Mapping[str, Path]) -> dict[str, float]:
    """What training cost, from an evaluation's optional `cost` input (its training step's `cost` output); nothing
    when that input is not wired."""
    return json.loads(inputs["cost"].read_text()) if "cost" in inputs else {}
