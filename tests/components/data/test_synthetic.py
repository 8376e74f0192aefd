"""The synthetic source: deterministic from the seed, and the configured modality dominates."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from mmflow.components.data.datasets import generate_synthetic
from mmflow.components.data.synthetic import SyntheticParams


def nearest_mean_accuracy(x: torch.Tensor, y: torch.Tensor, classes: int) -> float:
    means = torch.stack([x[y == c].mean(0) for c in range(classes)])
    return (torch.cdist(x, means).argmin(1) == y).float().mean().item()


def test_same_seed_same_data_other_seed_other_data():
    params = SyntheticParams(train_size=50, test_size=10)
    a, b, c = generate_synthetic(params, 1), generate_synthetic(params, 1), generate_synthetic(params, 2)
    assert torch.equal(a["train"]["audio"], b["train"]["audio"])
    assert not torch.equal(a["train"]["audio"], c["train"]["audio"])


def test_stronger_signal_makes_a_dominant_modality():
    params = SyntheticParams.model_validate({"num_classes": 4, "train_size": 4000, "test_size": 1, "modalities": [
        {"name": "strong", "dim": 16, "signal": 3.0}, {"name": "weak", "dim": 16, "signal": 0.8}]})
    train = generate_synthetic(params, 0)["train"]
    strong = nearest_mean_accuracy(train["strong"], train["label"], 4)
    weak = nearest_mean_accuracy(train["weak"], train["label"], 4)
    assert strong > 0.85 and 0.3 < weak < 0.6


def test_class_conditional_signal():
    params = SyntheticParams.model_validate({"num_classes": 2, "train_size": 4000, "test_size": 1, "modalities": [
        {"name": "m", "dim": 8, "signal": [0.0, 4.0]}]})
    train = generate_synthetic(params, 0)["train"]
    norms = [train["m"][train["label"] == c].mean(0).norm().item() for c in (0, 1)]
    assert norms[0] < 0.3 and 3.5 < norms[1] < 4.5


def test_signal_list_must_match_classes_and_names_unique():
    with pytest.raises(ValidationError, match="signal has 2 values but num_classes is 3"):
        SyntheticParams.model_validate({"num_classes": 3, "modalities": [{"name": "m", "signal": [1, 2]}]})
    with pytest.raises(ValidationError, match="unique"):
        SyntheticParams.model_validate({"modalities": [{"name": "m"}, {"name": "m"}]})


def test_informative_dimensions_carry_the_signal_and_the_rest_is_noise():
    params = SyntheticParams.model_validate({"num_classes": 3, "train_size": 6000, "test_size": 1, "modalities": [
        {"name": "m", "dim": 40, "informative": 3, "signal": 3.0}]})
    train = generate_synthetic(params, 0)["train"]
    means = torch.stack([train["m"][train["label"] == c].mean(0) for c in range(3)])
    assert int((means.abs().max(0).values > 0.3).sum()) <= 3  # class means differ only on the support
    assert nearest_mean_accuracy(train["m"], train["label"], 3) > 0.8
    with pytest.raises(ValidationError, match="informative 50 exceeds dim 40"):
        SyntheticParams.model_validate({"modalities": [{"name": "m", "dim": 40, "informative": 50}]})
