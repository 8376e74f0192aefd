"""Noise robustness against hand-computed values: MultiBench's noise, relative and effective robustness, and the
curve eval.classifier scores with one modality noised at a time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmflow.components.tasks.noise_robustness import (NoiseRobustness, add_noise, effective_robustness,
                                                      relative_robustness)


def test_noise_is_gaussian_at_the_levels_share_of_each_samples_spread_then_drops_that_share_of_entries():
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1, 100_000), 10 * torch.randn(1, 100_000)])  # two samples, spreads 1 and 10
    assert torch.equal(add_noise(x, 0.0, generator), x)
    assert torch.equal(add_noise(x, 1.0, generator), torch.zeros_like(x))  # every entry dropped
    noisy = add_noise(x, 0.3, generator)
    kept = noisy != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.01)
    for i, spread in enumerate([1.0, 10.0]):
        noise = (noisy[i] - x[i])[kept[i]]
        assert noise.mean().item() == pytest.approx(0, abs=0.02 * spread)
        assert noise.std().item() == pytest.approx(0.3 * x[i].std().item(), rel=0.02)
    image = torch.randint(0, 256, (2, 1, 100, 100), generator=generator, dtype=torch.uint8)
    noisy_image = add_noise(image, 0.3, generator)  # bytes: noise on the 0-255 scale, back to bytes
    assert noisy_image.dtype == torch.uint8 and torch.equal(add_noise(image, 0.0, generator), image)
    changed = (noisy_image.float() - image.float())[noisy_image != 0]
    assert changed.abs().mean().item() > 0.1 * image.float().std().item()
    tokens = torch.arange(1, 1001).view(10, 100)  # other integer inputs are only dropped
    dropped = add_noise(tokens, 0.5, generator)
    assert dropped.dtype == tokens.dtype and torch.all((dropped == tokens) | (dropped == 0))


def test_relative_robustness_is_the_area_under_the_curve_as_multibench_sums_it():
    assert relative_robustness([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    curve = [0.9, 0.88, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    multibench = sum((curve[i] + curve[i + 1]) * 0.1 / 2 for i in range(len(curve) - 1))  # its helper, step 0.1
    assert relative_robustness([i / 10 for i in range(11)], curve) == pytest.approx(multibench)


def test_effective_robustness_compares_with_the_reference_moved_to_the_same_clean_accuracy():
    # the reference moved up by 0.9 - 0.8: [0.9, 0.7, 0.5]; f above it by 0, 0.1, 0.2
    assert effective_robustness([0.9, 0.8, 0.7], [0.8, 0.6, 0.4]) == pytest.approx(0.3)
    assert effective_robustness([0.5, 0.4], [0.9, 0.8]) == pytest.approx(0.0)  # the same fall: no better
    with pytest.raises(ValueError):
        effective_robustness([0.9, 0.8], [0.9, 0.8, 0.7])


class ReadsA(torch.nn.Module):
    """Predicts from modality a alone (its input is the logits); b is ignored."""

    def forward(self, features):
        return SimpleNamespace(logits=features["a"] + 0 * features["b"].sum(1, keepdim=True))


def test_each_modality_is_noised_alone_and_scored_at_every_level():
    labels = torch.tensor([0, 1, 1, 1])
    a = 5 * torch.nn.functional.one_hot(labels, 2).float()  # right on every sample
    b = torch.randn(4, 3)
    model, features = ReadsA(), {"a": a, "b": b}
    robustness = NoiseRobustness(["a", "b"], [0.0, 0.5, 1.0], seed=0)
    robustness.add(model, features, labels, model(features).logits)
    metrics = robustness.metrics()
    curve_b = metrics["accuracy_under_noise/b"]
    assert curve_b == {"x": "noise level", "points": [[0.0, 1.0], [0.5, 1.0], [1.0, 1.0]]}  # b does not matter
    assert metrics["relative_robustness_b"] == pytest.approx(1.0)
    points_a = metrics["accuracy_under_noise/a"]["points"]
    # level 1 zeroes a: all-zero logits predict class 0, right on one sample of four
    assert points_a[0] == [0.0, 1.0] and points_a[2] == [1.0, 0.25]
    assert metrics["relative_robustness_a"] == pytest.approx((1.0 + points_a[1][1]) / 4 + (points_a[1][1] + 0.25) / 4)


def test_eval_classifier_reports_a_curve_per_modality_from_the_clean_accuracy_and_its_area(evaluated):
    from mmflow.components.tasks.classifier_eval import evaluate

    def run(levels):
        return evaluate(evaluated / "model", evaluated / "train", evaluated / "test", batch_size=16,
                        contribution=False, probe_steps=0, noise_levels=levels)

    metrics = run([0.0, 0.5, 1.0])
    for m in "ab":
        levels, accuracies = zip(*metrics[f"accuracy_under_noise/{m}"]["points"])
        assert levels == (0.0, 0.5, 1.0) and accuracies[0] == metrics["accuracy"]
        assert metrics[f"relative_robustness_{m}"] == pytest.approx(relative_robustness(list(levels), list(accuracies)))
    assert run([0.0, 0.5, 1.0]) == metrics  # seeded noise
    assert not any(k.startswith(("accuracy_under_noise", "relative_robustness")) for k in run([]))


@pytest.mark.parametrize("levels", [[0.5, 1.0], [0.0, 0.5, 0.5], [0.0, 1.5]])
def test_noise_levels_must_rise_from_zero_to_at_most_one(levels):
    from pydantic import ValidationError

    from mmflow.components.tasks.classification import EvalClassifierParams

    assert EvalClassifierParams().noise_levels == [i / 10 for i in range(11)]  # MultiBench's
    with pytest.raises(ValidationError, match="noise levels rise from 0"):
        EvalClassifierParams(noise_levels=levels)
