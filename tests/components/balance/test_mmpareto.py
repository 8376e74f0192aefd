"""MMPareto against its rule (the official code): Pareto weights, the integrated gradient, replicas that agree."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.mmpareto import MMParetoParams, integrated, pareto_weights
from mmflow.components.models.build import build_classifier
from mmflow.components.tasks.training_params import TrainClassifierParams

from .replicas import replica_gradients


def weights(g_mm: list[float], g_u: list[float]) -> tuple[float, float]:
    w_mm, w_u = pareto_weights(torch.tensor(g_mm), torch.tensor(g_u))
    return float(w_mm), float(w_u)


def test_agreeing_gradients_weigh_half_each_and_conflicting_ones_meet_at_the_min_norm_point():
    assert weights([1.0, 0.0], [1.0, 1.0]) == (0.5, 0.5)  # cos > 0
    # cos < 0: min over w of |w (1, 0) + (1 - w)(-1, 1)|^2 = (2w - 1)^2 + (1 - w)^2, zero derivative at w = 3/5
    assert weights([1.0, 0.0], [-1.0, 1.0]) == pytest.approx((0.6, 0.4))
    # opposite: 2/3 (1, 0) + 1/3 (-2, 0) = 0
    assert weights([1.0, 0.0], [-2.0, 0.0]) == pytest.approx((2 / 3, 1 / 3))
    assert weights([0.0, 0.0], [-1.0, 1.0]) == pytest.approx((0.999, 0.001), abs=1e-6)  # the solver's end: g_mm is the point


def test_the_integrated_gradient_keeps_at_least_the_sums_magnitude_times_gamma():
    def new(g_mm, g_u, w_mm, w_u):
        return integrated(torch.tensor(g_mm), torch.tensor(g_u), torch.tensor(w_mm), torch.tensor(w_u), 1.5)

    torch.testing.assert_close(new([1.0, 0.0], [1.0, 1.0], 0.5, 0.5), torch.tensor([3.0, 1.5]))  # 1.5 (g_mm + g_u)
    # d = 2 (0.6 (1, 0) + 0.4 (-1, 1)) = (0.4, 0.8); |g_mm + g_u| = |(0, 1)| = 1 > |d| = sqrt(0.8): scaled up to 1
    d = torch.tensor([0.4, 0.8])
    torch.testing.assert_close(new([1.0, 0.0], [-1.0, 1.0], 0.6, 0.4), 1.5 * d / math.sqrt(0.8))
    # |g_mm + g_u| = 0 < |d|: never scaled down
    torch.testing.assert_close(new([1.0, 0.0], [-1.0, 0.0], 0.999, 0.001), 1.5 * torch.tensor([1.996, 0.0]))


SHAPES = {"a": 4, "b": 3, "c": 2}


def setup(seed: int = 0, modalities: str = "ab"):
    torch.manual_seed(seed)
    model = build_classifier({"modalities": {m: [SHAPES[m]] for m in modalities}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": "concat", "modality_heads": "own"})
    x = {m: torch.randn(16, SHAPES[m]) * (3 if m == "a" else 1) for m in modalities}
    return model, x, torch.randint(3, (16,))


def expected_gradients(model, x, labels, gamma: float) -> dict[str, torch.Tensor]:
    """Each encoder's gradients by the rule, from its fused and own losses' gradients taken separately; every
    other parameter's from the plain sum of the losses."""
    out = model(x)
    fused = F.cross_entropy(out.logits, labels)
    own = {m: F.cross_entropy(out.modality_logits[m], labels) for m in x}
    expected = {}
    for m in x:
        names, params = zip(*model.encoders[m].named_parameters())
        g_mm = torch.autograd.grad(fused, params, retain_graph=True)
        g_u = torch.autograd.grad(own[m], params, retain_graph=True)
        w_mm, w_u = pareto_weights(torch.cat([g.flatten() for g in g_mm]), torch.cat([g.flatten() for g in g_u]))
        for name, gm, gu in zip(names, g_mm, g_u):
            expected[f"encoders.{m}.{name}"] = integrated(gm, gu, w_mm, w_u, gamma)
    rest = [(n, p) for n, p in model.named_parameters() if not n.startswith("encoders.")]
    for (name, _), grad in zip(rest, torch.autograd.grad(fused + sum(own.values()), [p for _, p in rest])):
        expected[name] = grad
    return expected


@pytest.mark.parametrize("modalities", ["ab", "abc"])
def test_encoders_get_the_integrated_gradients_and_heads_and_fusion_the_plain_sums(modalities):
    model, x, labels = setup(modalities=modalities)
    expected = expected_gradients(model, x, labels, gamma=1.5)
    method = build_method(MMParetoParams(), list(modalities), "concat", seed=0)
    method.bind(TrainingContext(model, torch.device("cpu")))
    out = model(x)
    loss, stats = method.loss(out, labels)
    loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    stats.update(method.after_backward(out, labels))
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)
    assert not torch.allclose(model.encoders["a"].net[1].weight.grad, plain["encoders.a.net.1.weight"])
    assert {f"{stat}_{m}" for stat in ("loss", "cos", "weight") for m in modalities} <= set(stats)


def test_couples_encoders_fusions_are_refused_at_validation():
    with pytest.raises(ValueError, match="mmtm couples the encoders"):
        TrainClassifierParams.model_validate({"encoder": "cnn", "fusion": "mmtm", "method": "mmpareto"})
    TrainClassifierParams.model_validate({"encoder": "cnn", "fusion": "centralnet", "method": "mmpareto"})


def test_two_data_parallel_replicas_get_the_gradients_of_the_whole_batch(tmp_path):
    """Each rank sees half the batch; the choice is made on gradients averaged over ranks, so both replicas get
    what one process gets from the whole batch."""
    model, x, labels = setup()
    expected = expected_gradients(model, x, labels, gamma=1.5)
    for rank, grads in enumerate(replica_gradients(setup, MMParetoParams(), "concat", tmp_path)):
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected[name], msg=f"rank {rank} {name}")
