"""Diagnosing & Re-learning against the official code's rule: purity, weight, schedule, soft re-initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.relearning import (ReLearningParams, cluster_purity, purity,
                                                          reinit_weight)
from mmflow.components.models.build import build_classifier


def test_purity_counts_each_clusters_majority_label():
    # cluster 0 holds labels 1, 0, 0 (majority 0: 2 right), cluster 1 holds 1, 1 (2 right): 4 of 5
    assert purity(torch.tensor([1, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1])) == pytest.approx(0.8)
    assert purity(torch.tensor([2, 0, 1]), torch.tensor([5, 5, 5])) == pytest.approx(1 / 3)


def test_clusters_found_in_the_embeddings_score_their_labels():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    blobs = centers.repeat_interleave(3, dim=0) + 0.01 * torch.randn(9, 2, generator=torch.Generator().manual_seed(0))
    assert cluster_purity(blobs, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]), 3) == 1.0
    # the same blobs with mixed labels: 2 of 3 right in each
    assert cluster_purity(blobs, torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 0]), 3) == pytest.approx(2 / 3)
    assert reinit_weight(1.0, 2 / 3, 3.0) == pytest.approx(math.tanh(1.0))


def model_and_method(rank: int, all_reduce_sum, **params):
    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [4], "b": [3]}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": "concat"})
    method = build_method(ReLearningParams(**params), ["a", "b"], "concat", seed=0)
    method.bind(TrainingContext(model, torch.device("cpu"), rank=rank, all_reduce_sum=all_reduce_sum))
    return model, method


def test_encoders_move_back_toward_their_initial_weights_by_the_diagnosed_share():
    """Rank 1 diagnoses nothing itself: rank 0's purities reach it through the sum over ranks."""
    from_rank0 = torch.tensor([[0.9, 0.5], [0.6, 0.5]], dtype=torch.float64)  # train / held-out purity of a, b
    model, method = model_and_method(1, lambda t: t + from_rank0, reinit_epoch=2, reinit_num=2)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    for epoch in range(7):
        method.context.epoch = epoch
        method.after_epoch()
        if epoch == 2:
            found = method.epoch_metrics()
            w_a = math.tanh(3.0 * 0.3)
            assert found["weight_a"] == pytest.approx(w_a) and found["weight_b"] == 0.0
            assert found["purity_train_a"] == pytest.approx(0.9)
            for name, p in model.named_parameters():
                if name.startswith("encoders.a."):
                    torch.testing.assert_close(p, w_a * initial[name] + (1 - w_a) * trained[name])
                else:  # b's weight is 0; the fusion is never touched
                    torch.testing.assert_close(p, trained[name])
    assert method.diagnosed == 2  # epochs 2 and 4; not 6 (reinit_num), never 0
    assert method.state_dict()["diagnosed"] == 2 and set(method.state_dict()["initial"]) == {
        n.removeprefix("encoders.") for n in initial if n.startswith("encoders.")}


def test_a_restored_method_keeps_the_initial_weights_it_saved():
    model, method = model_and_method(0, lambda t: t)
    saved = method.state_dict()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    restored = build_method(ReLearningParams(), ["a", "b"], "concat", seed=0)
    restored.load_state_dict(saved)
    restored.bind(TrainingContext(model, torch.device("cpu")))  # after a resume, the model is already trained
    assert all(torch.equal(restored.initial[n], saved["initial"][n]) for n in saved["initial"])
