"""AGM against the official code's rule: Shapley shares, coefficients, each share's gradient rescaled."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.agm import AGMParams, agm_coefficients, shapley_shares
from mmflow.components.models.fusion import SumFusion
from mmflow.components.models.multimodal import MultimodalClassifier

from .replicas import replica_gradients, step_gradients


def test_two_modalities_shares_are_the_official_halves():
    f = {"av": 7.0, "a": 5.0, "v": 1.0}  # v(S): the logits with the others zeroed; v(empty) = 0
    shares = shapley_shares(lambda s: torch.tensor(f["".join(sorted(s, key="av".index))]), ["a", "v"])
    # official: m_a = (f(a,v) - f(0,v) + f(a,0)) / 2, m_v = (f(a,v) - f(a,0) + f(0,v)) / 2
    assert float(shares["a"]) == pytest.approx((7 - 1 + 5) / 2)
    assert float(shares["v"]) == pytest.approx((7 - 5 + 1) / 2)


def test_three_modalities_shares_are_the_official_thirds_and_sixths():
    f = {"avt": 20.0, "av": 9.0, "at": 8.0, "vt": 6.0, "a": 4.0, "v": 2.0, "t": 1.0}
    shares = shapley_shares(lambda s: torch.tensor(f["".join(sorted(s, key="avt".index))]), ["a", "v", "t"])
    # official (URFunny): m_t = (f(avt) - f(av) + f(t)) / 3 + (f(at) - f(v) + f(vt) - f(a)) / 6
    assert float(shares["t"]) == pytest.approx((20 - 9 + 1) / 3 + (8 - 2 + 6 - 4) / 6)
    assert float(shares["a"]) == pytest.approx((20 - 6 + 4) / 3 + (8 - 1 + 9 - 2) / 6)
    assert float(sum(shares.values())) == pytest.approx(20.0)  # efficient: they sum to the fused logits


def test_coefficients_slow_the_modality_ahead_of_its_running_balance():
    scores, running = torch.tensor([0.5, 1.0]), torch.tensor([0.8, 0.9])  # a: lower loss than usual
    coefs = agm_coefficients(scores, running, alpha=1.0, max_exponent=10)
    # official, two modalities: ratio_a = exp(s_v - s_a), optimal_a = exp(t_v - t_a), coef = exp(alpha (opt - ratio))
    assert float(coefs[0]) == pytest.approx(math.exp(math.exp(0.1) - math.exp(0.5)), rel=1e-5)
    assert float(coefs[1]) == pytest.approx(math.exp(math.exp(-0.1) - math.exp(-0.5)), rel=1e-5)
    assert float(coefs[0]) < 1 < float(coefs[1])
    capped = agm_coefficients(torch.tensor([5.0, 0.0]), torch.tensor([0.0, 0.0]), alpha=0.5, max_exponent=0.5)
    assert float(capped[0]) == pytest.approx(math.exp(0.5 * 0.5))


class Identity(nn.Identity):
    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim


def test_each_modalitys_gradient_is_scaled_by_its_coefficient():
    """Sum fusion over identity encoders: f = W_a x_a + b_a + W_v x_v + b_v, so the shares are
    W_a x_a + (b_a + b_v) / 2 and W_v x_v + (b_a + b_v) / 2, and with g = dLoss/dlogits the gradients are
    c_a g x_a (W_a), c_v g x_v (W_v) and (c_a + c_v) / 2 sum g (each bias)."""
    torch.manual_seed(0)
    model = MultimodalClassifier({"a": Identity(3), "v": Identity(2)}, SumFusion({"a": 3, "v": 2}, 4))
    x, labels = {"a": torch.randn(8, 3) * 2, "v": torch.randn(8, 2)}, torch.randint(4, (8,))
    method = build_method(AGMParams(alpha=1.0), ["a", "v"], "sum", seed=0)
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=0))
    method.running = torch.tensor([0.5, 1.5])  # so the coefficients differ from 1 and from each other
    method.steps = 10
    out = model(method.prepare_inputs(x))
    loss, stats = method.loss(out, labels)
    loss.backward()
    c_a, c_v = float(stats["coef_a"]), float(stats["coef_v"])
    assert abs(c_a - c_v) > 0.1
    logits = out.logits.detach().requires_grad_()
    g, = torch.autograd.grad(nn.functional.cross_entropy(logits, labels), logits)
    fcs = model.fusion.fcs
    torch.testing.assert_close(fcs["a"].weight.grad, c_a * g.T @ x["a"])
    torch.testing.assert_close(fcs["v"].weight.grad, c_v * g.T @ x["v"])
    torch.testing.assert_close(fcs["a"].bias.grad, (c_a + c_v) / 2 * g.sum(0))
    torch.testing.assert_close(loss.detach(), nn.functional.cross_entropy(out.logits, labels).detach())
    # the running scores moved toward this batch's
    assert method.steps == 11 and not torch.equal(method.running, torch.tensor([0.5, 1.5]))


def test_outside_the_window_it_is_plain_training():
    method = build_method(AGMParams(start_epoch=2, end_epoch=3), ["a", "v"], "sum", seed=0)
    torch.manual_seed(0)
    model = MultimodalClassifier({"a": Identity(3), "v": Identity(2)}, SumFusion({"a": 3, "v": 2}, 4))
    x, labels = {"a": torch.randn(8, 3), "v": torch.randn(8, 2)}, torch.randint(4, (8,))
    for epoch, coefs_are_one, steps in ((0, True, 1), (2, False, 2), (4, True, 2)):
        method.bind(TrainingContext(model, torch.device("cpu"), epoch=epoch))
        method.running = torch.tensor([0.1, 2.0]) if epoch == 2 else method.running
        loss, stats = method.loss(model(method.prepare_inputs(x)), labels)
        assert method.steps == steps  # running scores kept before the window, not after it
        if "coef_a" in stats:
            assert (float(stats["coef_a"]) == 1.0) == coefs_are_one


class Normed(nn.BatchNorm1d):
    def __init__(self, out_dim: int) -> None:
        super().__init__(out_dim)
        self.out_dim = out_dim


def test_the_coalitions_passes_leave_batch_statistics_alone():
    import copy

    torch.manual_seed(0)
    model = MultimodalClassifier({"a": Normed(3), "v": Normed(2)}, SumFusion({"a": 3, "v": 2}, 4))
    plain = copy.deepcopy(model)
    x, labels = {"a": torch.randn(8, 3) + 1, "v": torch.randn(8, 2)}, torch.randint(4, (8,))
    method = build_method(AGMParams(), ["a", "v"], "sum", seed=0)
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=0))
    method.loss(model(method.prepare_inputs(x)), labels)
    plain(x)  # the training step's own forward pass only
    for m in ("a", "v"):
        torch.testing.assert_close(model.encoders[m].running_mean, plain.encoders[m].running_mean)
    assert model.training and model.encoders["a"].training


def mlp_setup():
    from mmflow.components.models.build import build_classifier

    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [4], "v": [3]}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": "concat"})
    return model, {"a": torch.randn(16, 4) * 3, "v": torch.randn(16, 3)}, torch.randint(3, (16,))


def test_two_data_parallel_replicas_get_the_gradients_of_the_whole_batch(tmp_path):
    """The coalitions' passes run beside DDP's own, and the scores are averaged over ranks: both replicas get
    what one process gets from the whole batch."""
    expected = step_gradients(mlp_setup, AGMParams(), "concat")
    for rank, grads in enumerate(replica_gradients(mlp_setup, AGMParams(), "concat", tmp_path)):
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected[name], msg=f"rank {rank} {name}")
