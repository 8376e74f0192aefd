"""Optimizers and learning-rate schedules are the ones the params name, with the params' settings."""

from __future__ import annotations

import math

import pytest
import torch

from mmflow.components.tasks.training_params import TrainClassifierParams
from mmflow.components.tasks.optim import make_optimizer, make_schedule


@pytest.mark.parametrize("name, kind, extra", [("sgd", torch.optim.SGD, {"momentum": 0.7}),
                                               ("adam", torch.optim.Adam, {}),
                                               ("adagrad", torch.optim.Adagrad, {})])
def test_the_optimizer_is_the_one_named_with_its_settings(name, kind, extra):
    params = TrainClassifierParams(optimizer=name, lr=0.25, momentum=0.7, weight_decay=0.03)
    weights = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = make_optimizer(params, weights)
    assert type(optimizer) is kind and optimizer.param_groups[0]["params"] == weights
    settings = {k: optimizer.param_groups[0][k] for k in ("lr", "weight_decay", *extra)}
    assert settings == {"lr": 0.25, "weight_decay": 0.03, **extra}


@pytest.mark.parametrize("schedule, rates", [
    ("constant", [1.0, 1.0, 1.0, 1.0, 1.0]),
    ("step", [1.0, 1.0, 0.5, 0.5, 0.25]),  # every 2 epochs, times 0.5
    ("cosine", [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0]),  # 4 epochs
])
def test_the_schedule_sets_each_epochs_learning_rate(schedule, rates):
    params = TrainClassifierParams(optimizer="sgd", lr=1.0, epochs=4, lr_schedule=schedule, lr_step_size=2,
                                   lr_gamma=0.5)
    optimizer = make_optimizer(params, [torch.nn.Parameter(torch.zeros(1))])
    steps = make_schedule(params, optimizer)
    seen = []
    for _ in rates:
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        steps.step()
    assert seen == pytest.approx(rates, abs=1e-9)
