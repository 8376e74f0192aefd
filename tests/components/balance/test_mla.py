"""MLA against its rule (BalanceBenchmark's code): alternating steps, the projection, the shared head's fusion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.mla import MLAParams, projection_alpha, projection_update
from mmflow.components.models.build import build_classifier
from mmflow.components.tasks.training_params import TrainClassifierParams


def test_the_projection_divides_elementwise_then_scales_to_unit_norm():
    # r = (1, 1), P = I: k = (1, 1)^T, k k^T and k r are all ones, so each entry loses 1 / (alpha + 1)
    updated = projection_update(torch.eye(2), torch.tensor([[1.0, 1.0]]), alpha=0.1)
    raw = torch.tensor([[1 - 1 / 1.1, -1 / 1.1], [-1 / 1.1, 1 - 1 / 1.1]])
    torch.testing.assert_close(updated, raw / raw.norm())
    # r = (1, 0): only the first direction shrinks; off the diagonal k k^T is 0
    updated = projection_update(torch.eye(2), torch.tensor([[1.0, 0.0]]), alpha=0.1)
    raw = torch.tensor([[0.1 / 1.1, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(updated, raw / raw.norm())


def test_alpha_falls_from_a_tenth_to_a_hundredth_over_an_epoch():
    assert projection_alpha(0, 10) == pytest.approx(0.1)
    assert projection_alpha(5, 10) == pytest.approx(0.1 ** 1.5)
    assert projection_alpha(9, 10) == pytest.approx(0.1 ** 1.9)


def setup(modalities: str = "ab"):
    torch.manual_seed(0)
    model = build_classifier({"modalities": {m: [3 + i] for i, m in enumerate(modalities)}, "num_classes": 3,
                              "hidden": [5], "embedding_dim": 4, "fusion": "shared"})
    x = {m: torch.randn(8, 3 + i) for i, m in enumerate(modalities)}
    return model, x, torch.randint(3, (8,))


def one_batch(model, x, labels, params=MLAParams(), all_reduce_sum=lambda t: t, batch=2, batches=4):
    """The training loop's steps on one batch: (parameters before each step, head gradient before and after the
    method's hook, loss per step)."""
    method = build_method(params, list(x), "shared", seed=0)
    context = TrainingContext(model, torch.device("cpu"), epoch=0, all_reduce_sum=all_reduce_sum)
    method.bind(context)
    context.batch, context.batches = batch, batches
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    for _ in method.substeps():
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        out = model(method.prepare_inputs(x))
        loss, _ = method.loss(out, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        raw = model.fusion.fc.weight.grad.clone()
        method.after_backward(out, labels)
        steps.append((before, raw, model.fusion.fc.weight.grad.clone(), loss.detach(), out))
        optimizer.step()
    return method, steps


def test_each_batch_takes_one_step_per_modality_on_its_own_loss_through_the_shared_head():
    model, x, labels = setup()
    _, steps = one_batch(model, x, labels)
    assert len(steps) == 2
    for (before, _, _, loss, out), modality in zip(steps, "ab"):
        z = out.embeddings[modality]
        head = before["fusion.fc.weight"], before["fusion.fc.bias"]
        torch.testing.assert_close(loss, F.cross_entropy(z @ head[0].T + head[1], labels))
    (first, *_), (second, *_) = steps
    after = dict(model.named_parameters())
    changed = lambda a, b, prefix: any(not torch.equal(a[n], b[n]) for n in a if n.startswith(prefix))  # noqa: E731
    assert changed(first, second, "encoders.a") and not changed(first, second, "encoders.b")  # step 1 trains a
    assert changed(second, after, "encoders.b") and not changed(second, after, "encoders.a")  # step 2 trains b
    assert changed(first, second, "fusion.fc") and changed(second, after, "fusion.fc")  # both train the head


def test_the_heads_gradient_gains_its_product_with_the_projection_from_the_second_step_on():
    model, x, labels = setup()
    method, steps = one_batch(model, x, labels, batch=2, batches=4)
    (_, raw_a, new_a, _, _), (_, raw_b, new_b, _, out_b) = steps
    torch.testing.assert_close(new_a, raw_a)  # the very first step keeps its gradient
    mean = out_b.embeddings["b"].detach().mean(0, keepdim=True)
    projection = projection_update(torch.eye(4), mean, 0.1 ** 1.5)
    torch.testing.assert_close(new_b, raw_b + raw_b @ projection.T)
    torch.testing.assert_close(method.projection, projection)
    assert method.projected_steps == 2


def test_replicas_project_with_the_mean_embedding_over_every_rank():
    other = torch.cat([torch.full((4,), 8.0), torch.tensor([8.0])])  # another rank: 8 samples, each embedding 1s
    model, x, labels = setup()
    _, steps = one_batch(model, x, labels, all_reduce_sum=lambda t: t + other)
    z = steps[1][4].embeddings["b"].detach()
    mean = ((z.sum(0) + 8.0) / 16)[None]
    torch.testing.assert_close(steps[1][2], steps[1][1] + steps[1][1] @ projection_update(
        torch.eye(4), mean, 0.1 ** 1.5).T)


def test_outside_its_window_training_is_joint_on_the_entropy_fused_logits():
    model, x, labels = setup()
    _, steps = one_batch(model, x, labels, params=MLAParams(start_epoch=1))
    assert len(steps) == 1
    torch.testing.assert_close(steps[0][3], F.cross_entropy(steps[0][4].logits, labels))


def test_three_modalities_take_three_steps():
    model, x, labels = setup("abc")
    _, steps = one_batch(model, x, labels)
    assert len(steps) == 3 and all(math.isfinite(s[3]) for s in steps)


def test_validation_asks_for_the_shared_head():
    with pytest.raises(ValueError, match="use fusion: shared"):
        TrainClassifierParams.model_validate({"method": {"name": "mla"}, "fusion": "concat"})
    TrainClassifierParams.model_validate({"method": {"name": "mla"}, "fusion": "shared"})
