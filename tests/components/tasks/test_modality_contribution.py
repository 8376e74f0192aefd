"""Shapley contribution against hand-computed values, and eval.classifier's subsets scored with zeroed inputs."""

from __future__ import annotations

import pytest
import torch

from mmflow.components.tasks.modality_contribution import SubsetAccuracy, shapley_values, subsets


def values(table: dict[str, float]) -> dict[frozenset[str], torch.Tensor]:
    return {frozenset(k.split("+")) - {""}: torch.tensor(v) for k, v in table.items()}


def test_two_modalities_average_their_two_marginal_gains():
    v = values({"": 0.1, "a": 0.6, "b": 0.3, "a+b": 0.8})
    phi = shapley_values(v, ["a", "b"])
    # a: ((0.6 - 0.1) + (0.8 - 0.3)) / 2; b: ((0.3 - 0.1) + (0.8 - 0.6)) / 2
    assert phi["a"].item() == pytest.approx(0.5) and phi["b"].item() == pytest.approx(0.2)


def test_three_modalities_weigh_subsets_by_their_size_and_add_up_to_the_total_gain():
    v = values({"": 0.0, "a": 0.3, "b": 0.2, "c": 0.1, "a+b": 0.6, "a+c": 0.4, "b+c": 0.3, "a+b+c": 0.9})
    phi = shapley_values(v, ["a", "b", "c"])
    # a: 1/3 (0.3 - 0) + 1/6 (0.6 - 0.2) + 1/6 (0.4 - 0.1) + 1/3 (0.9 - 0.3)
    assert phi["a"].item() == pytest.approx(0.1 + 0.4 / 6 + 0.3 / 6 + 0.2)
    assert sum(p.item() for p in phi.values()) == pytest.approx(0.9)
    assert len(subsets(["a", "b", "c"])) == 8 and subsets(["a", "b", "c"])[0] == frozenset()


class Votes(torch.nn.Module):
    """Each modality's input is its class vote (a one-hot row); the fused logits add them, so a zeroed input drops
    that modality's vote."""

    def forward(self, features):
        from types import SimpleNamespace

        return SimpleNamespace(logits=features["a"] + 2 * features["b"])


def test_subsets_are_scored_with_the_absent_modalities_inputs_zeroed_per_class():
    labels = torch.tensor([0, 0, 1, 1])
    a = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1]), 2).float()  # a right on samples 0, 2, 3
    b = torch.nn.functional.one_hot(torch.tensor([1, 0, 1, 0]), 2).float()  # b right on 1, 2; it outvotes a
    model, features = Votes(), {"a": a, "b": b}
    accuracy = SubsetAccuracy(["a", "b"], 2)
    accuracy.add(model, features, labels, model(features).logits)
    metrics = accuracy.metrics()
    # none: all-zero logits predict class 0, right on samples 0 and 1
    assert metrics["subset_accuracy_none"] == 0.5 and metrics["subset_accuracy_a"] == 0.75
    assert metrics["subset_accuracy_b"] == 0.5 and metrics["subset_accuracy_a_and_b"] == 0.5
    assert metrics["contribution_a"] == pytest.approx(((0.75 - 0.5) + (0.5 - 0.5)) / 2)
    assert metrics["contribution_b"] == pytest.approx(((0.5 - 0.5) + (0.5 - 0.75)) / 2)
    # class 1 (samples 2, 3): none 0, a 1, b 0.5, both 0.5
    assert metrics["contribution_a_class_1"] == pytest.approx(((1 - 0) + (0.5 - 0.5)) / 2)
    assert metrics["contribution_b_class_1"] == pytest.approx(((0.5 - 0) + (0.5 - 1)) / 2)


def test_eval_classifier_reports_every_subset_and_contributions_that_add_up(evaluated):
    from mmflow.components.tasks.classifier_eval import evaluate

    metrics = evaluate(evaluated / "model", evaluated / "train", evaluated / "test", batch_size=16)
    assert metrics["subset_accuracy_a_and_b"] == metrics["accuracy"]
    gain = metrics["accuracy"] - metrics["subset_accuracy_none"]
    assert metrics["contribution_a"] + metrics["contribution_b"] == pytest.approx(gain)
    for m in "ab":  # Shapley is linear and the classes are equally large: the overall value is their mean
        per_class = [metrics[f"contribution_{m}_class_{c}"] for c in range(4)]
        assert metrics[f"contribution_{m}"] == pytest.approx(sum(per_class) / 4)
    without = evaluate(evaluated / "model", evaluated / "train", evaluated / "test", batch_size=16, contribution=False)
    assert not any(k.startswith(("contribution_", "subset_accuracy_")) for k in without)
    assert without["accuracy"] == metrics["accuracy"]
