"""Per-epoch imbalance diagnostics against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.prototypes import prototype_logits
from mmflow.components.models.build import build_classifier
from mmflow.components.tasks.diagnostics import EpochTotals, batch_diagnostics, batch_results, gradient_angles


def model(fusion: str):
    torch.manual_seed(0)
    return build_classifier({"modalities": {"a": [4], "b": [3]}, "num_classes": 3, "hidden": [5],
                             "embedding_dim": 6, "fusion": fusion})


def angle_by_backward(net, features, labels, own_loss, modality) -> float:
    """The angle between two losses' gradients on one encoder, each taken by its own backward pass."""
    grads = []
    for loss_of in (own_loss, lambda out: F.cross_entropy(out.logits, labels)):
        net.zero_grad(set_to_none=False)
        loss_of(net(features)).backward()
        grads.append(torch.cat([p.grad.flatten().clone() for p in net.encoders[modality].parameters()]))
    cosine = torch.dot(grads[0], grads[1]) / (grads[0].norm() * grads[1].norm())
    return math.degrees(math.acos(float(cosine.clamp(-1, 1))))


def test_the_gradient_angles_leave_the_training_step_as_it_was():
    """Taken from the step's own outputs before its backward pass: the same gradients and BatchNorm statistics."""
    import copy

    net = model("concat")
    net.encoders["a"] = torch.nn.Sequential(torch.nn.BatchNorm1d(4), net.encoders["a"])
    plain = copy.deepcopy(net)
    torch.manual_seed(1)
    features, labels = {"a": torch.randn(16, 4) + 3, "b": torch.randn(16, 3)}, torch.randint(3, (16,))
    for diagnosed in (net, plain):
        out = diagnosed(features)
        if diagnosed is net:
            assert set(gradient_angles(net, out, labels, {})) == {"a", "b"}
        F.cross_entropy(out.logits, labels).backward()
    for (name, p), q in zip(net.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    for (name, buffer), other in zip(net.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(buffer, other, msg=name)


def test_gradient_angle_between_a_modalitys_own_loss_and_the_fused_loss():
    net = model("concat")
    torch.manual_seed(1)
    features, labels = {"a": torch.randn(16, 4), "b": torch.randn(16, 3)}, torch.randint(3, (16,))
    angles = gradient_angles(net, net(features), labels, {})
    for m in ("a", "b"):
        expected = angle_by_backward(net, features, labels, lambda out: F.cross_entropy(out.modality_logits[m], labels), m)
        assert float(angles[m]) == pytest.approx(expected, abs=1e-3)
        assert 1 < float(angles[m]) < 179


def test_gradient_angle_uses_prototype_loss_where_the_fusion_does_not_split():
    net = model("gated")
    torch.manual_seed(2)
    features, labels = {"a": torch.randn(16, 4), "b": torch.randn(16, 3)}, torch.randint(3, (16,))
    prototypes = {"a": torch.randn(3, 6)}
    angles = gradient_angles(net, net(features), labels, prototypes)
    assert set(angles) == {"a"}  # b has neither its own logits nor prototypes
    own = lambda out: F.cross_entropy(prototype_logits(out.embeddings["a"], prototypes["a"]), labels)  # noqa: E731
    assert float(angles["a"]) == pytest.approx(angle_by_backward(net, features, labels, own, "a"), abs=1e-3)


def test_batch_diagnostics_count_accuracies_per_head_and_prototype():
    from mmflow.components.models.multimodal import MultimodalOutput

    labels = torch.tensor([0, 1, 1, 0])
    out = MultimodalOutput(logits=torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0]]),
                           embeddings={"a": torch.tensor([[0.0], [1.0], [1.0], [1.0]]), "b": torch.zeros(4, 1)},
                           modality_logits={"a": torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 0]])})
    totals = EpochTotals()
    batch_results(totals, out, labels, torch.tensor(0.5))
    batch_diagnostics(totals, out, labels, {"a": torch.tensor([[0.0], [1.0]])})
    means = totals.means(lambda t: t)
    assert means["loss"] == pytest.approx(0.5) and means["train_accuracy"] == pytest.approx(0.75)
    assert means["head_accuracy_a"] == pytest.approx(0.5) and means["prototype_accuracy_a"] == pytest.approx(0.75)
    assert "rho" not in means  # one modality with prototypes: no ratio
