"""Extra forward passes that see what training sees and leave the model's state as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase


@contextlib.contextmanager
def kept_buffers(model: nn.Module) -> Iterator[None]:
    """Passes inside leave every buffer (BatchNorm's running statistics, its batch count) as it was."""
    saved = {name: buffer.clone() for name, buffer in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Normalization layers use each batch's own statistics, as in a training step, with dropout off and
    the running statistics untouched: embeddings comparable with the ones a training step computes."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    for module in model.modules():
        if isinstance(module, _NormBase):
            module.train()
    try:
        with kept_buffers(model):
            yield
    finally:
        for module, training in modes.items():
            module.train(training)
