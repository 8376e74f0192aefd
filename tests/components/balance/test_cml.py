"""CML against its rule: ever smaller modality sets by zeroed embeddings, the confidence penalty and its mask."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.cml import CMLParams, confidence_penalty
from mmflow.components.models.build import build_classifier
from mmflow.components.tasks.training_params import TrainClassifierParams


def test_the_penalty_sums_confidence_gained_over_the_samples_the_mask_keeps():
    labels = torch.tensor([0, 0, 1])
    # softmax of (log 3, 0): 0.75 on class 0; of (log 9, 0): 0.9; of (0, log 4): 0.8 on class 1
    larger = torch.tensor([[math.log(3), 0.0], [math.log(9), 0.0], [math.log(4), 0.0]])
    smaller = torch.tensor([[math.log(9), 0.0], [math.log(3), 0.0], [0.0, math.log(9)]])
    # sample 0: 0.9 - 0.75 gained; sample 1: confidence lost, no penalty; sample 2: the smaller set is right where
    # the larger is wrong: left out, though it gained 0.9 - 0.8
    torch.testing.assert_close(confidence_penalty(larger, smaller, labels), torch.tensor(0.15))


def setup(modalities: str = "ab", fusion: str = "concat"):
    torch.manual_seed(0)
    model = build_classifier({"modalities": {m: [3] for m in modalities}, "num_classes": 3, "hidden": [4],
                              "embedding_dim": 5, "fusion": fusion})
    x = {m: torch.randn(8, 3) for m in modalities}
    return model, x, torch.randint(3, (8,))


def bound(model, modalities, params=CMLParams(), epoch=0):
    method = build_method(params, list(modalities), "concat", seed=3)
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=epoch))
    method.before_epoch(None)
    return method


def test_two_modalities_remove_the_second_of_the_epochs_order_by_zeroing_its_embedding():
    model, x, labels = setup()
    method = bound(model, "ab", CMLParams(lam=0.1))
    out = model(x)
    loss, stats = method.loss(out, labels)
    kept = method.order[0]
    smaller, _ = model.fusion({m: z if m == kept else torch.zeros_like(z) for m, z in out.embeddings.items()})
    # concat: zeroing an embedding is the fused logits less its block, the whole bias kept (BalanceBenchmark's
    # out_s - out_m + b / 2)
    removed = next(m for m in "ab" if m != kept)
    torch.testing.assert_close(smaller, out.logits - out.modality_logits[removed] + model.fusion.fc.bias / 2)
    penalty = confidence_penalty(out.logits, smaller, labels)
    expected = (F.cross_entropy(out.logits, labels) + F.cross_entropy(smaller, labels)) / 2 + 0.1 * penalty
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(stats["penalty"], penalty)


def test_three_modalities_remove_two_in_turn_and_divide_by_three():
    model, x, labels = setup("abc")
    method = bound(model, "abc", CMLParams(lam=0.5))
    out = model(x)
    loss, _ = method.loss(out, labels)
    first, second, last = method.order
    z = out.embeddings
    two, _ = model.fusion({**z, last: torch.zeros_like(z[last])})
    one, _ = model.fusion({**z, second: torch.zeros_like(z[second]), last: torch.zeros_like(z[last])})
    ce = F.cross_entropy(out.logits, labels) + F.cross_entropy(two, labels) + F.cross_entropy(one, labels)
    penalty = confidence_penalty(out.logits, two, labels) + confidence_penalty(two, one, labels)
    torch.testing.assert_close(loss, ce / 3 + 0.5 * penalty)


def test_the_order_is_drawn_per_epoch_from_the_seed_alike_on_every_replica():
    model, _, _ = setup("abc")
    orders = {e: bound(model, "abc", epoch=e).order for e in range(8)}
    assert orders == {e: bound(model, "abc", epoch=e).order for e in range(8)}  # same seed and epoch: same order
    assert len({tuple(o) for o in orders.values()}) > 1  # and it changes between epochs
    assert all(sorted(o) == ["a", "b", "c"] for o in orders.values())


def test_outside_its_window_the_loss_is_the_fused_one():
    model, x, labels = setup()
    method = bound(model, "ab", CMLParams(start_epoch=2))
    out = model(x)
    torch.testing.assert_close(method.loss(out, labels)[0], F.cross_entropy(out.logits, labels))


def test_validation_refuses_fusions_inside_the_encoders():
    with pytest.raises(ValueError, match="use a late fusion"):
        TrainClassifierParams.model_validate({"method": {"name": "cml"}, "fusion": "mmtm", "encoder": "cnn"})
