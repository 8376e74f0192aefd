"""Optimizers and learning-rate schedules from a classifier's parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .training_params import ClassifierParams, TrainClassifierParams


def make_optimizer(params: ClassifierParams, parameters: Any) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdaGrad, as the papers compare."""
    if params.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    if params.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.Adagrad(parameters, lr=params.lr, weight_decay=params.weight_decay)


def make_schedule(params: TrainClassifierParams, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule."""
    if params.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, params.lr_step_size, params.lr_gamma)
    if params.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, params.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
