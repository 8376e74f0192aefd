"""Linear probes on frozen embeddings: the probe's start and step, and standardised predictions."""

from __future__ import annotations

import torch

from mmflow.components.tasks.probes import linear_probe, probe_predictions


def test_the_linear_probe_starts_small_and_seeded_and_steps_by_its_learning_rate():
    x, y = torch.randn(20, 4), torch.arange(20) % 2
    start = linear_probe(x, y, 2, steps=0, seed=5)
    assert torch.equal(start.weight, linear_probe(x, y, 2, steps=0, seed=5).weight)
    assert not torch.equal(start.weight, linear_probe(x, y, 2, steps=0, seed=6).weight)
    assert 0.002 < start.weight.std() < 0.05 and torch.equal(start.bias, torch.zeros(2))
    moved = linear_probe(x, y, 2, steps=1, seed=5)
    torch.testing.assert_close((moved.weight - start.weight).abs(), torch.full((2, 4), 1e-2), rtol=1e-3, atol=1e-5)


def test_probe_predictions_standardise_by_the_training_features():
    # class = sign of feature 0, around a large offset and scale that only standardisation removes
    train_x = torch.tensor([[1000.0 - 5], [1000.0 + 5]]).repeat(10, 1)
    train_y = torch.tensor([0, 1]).repeat(10)
    test_x = torch.tensor([[1000.0 - 2], [1000.0 + 3]])
    assert probe_predictions(train_x, train_y, test_x, 2, steps=100, seed=0).tolist() == [0, 1]
