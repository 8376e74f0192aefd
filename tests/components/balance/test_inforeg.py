"""InfoReg against the official code's rule: acquisition rate, proximal strengths, the pull, the Fisher trace."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.inforeg import InfoRegParams, acquisition_rate, proximal_strengths
from mmflow.components.models.build import build_classifier


def test_the_acquisition_rate_compares_the_last_ten_traces_with_the_ten_before():
    assert acquisition_rate([]) == 1.0  # the first epoch is inside the window
    assert acquisition_rate([2.0]) == pytest.approx(1.0)  # (0.2 - 0) / 0.2, the history padded with zeros
    # 1..11: (mean(2..11) - mean(1..10)) / mean(2..11) = 1 / 6.5
    assert acquisition_rate([float(t) for t in range(1, 12)]) == pytest.approx(1 / 6.5)
    assert acquisition_rate([5.0] * 20) == 0.0  # no more growth: the window has closed


def test_only_a_leading_modality_in_its_window_is_pulled_back():
    both_open = torch.tensor([True, True])
    betas = proximal_strengths(torch.tensor([30.0, 10.0]), 0.95, both_open)
    torch.testing.assert_close(betas, torch.tensor([0.95 * math.exp(math.tanh(20.0)), 0.0]))
    assert proximal_strengths(torch.tensor([30.0, 10.0]), 0.95, torch.tensor([False, True])).tolist() == [0, 0]
    three = proximal_strengths(torch.tensor([6.0, 3.0, 3.0]), 0.5, torch.tensor([True] * 3))
    torch.testing.assert_close(three, torch.tensor([0.5 * math.exp(math.tanh(3.0)), 0.0, 0.0]))


def test_the_leading_encoder_gets_the_proximal_term_and_the_fisher_trace_sums_its_squared_gradients():
    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [4], "v": [3]}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": "concat"})
    method = build_method(InfoRegParams(), ["a", "v"], "concat", seed=0)
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=0))
    method.before_epoch(None)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # trained half a unit away from the epoch's start
    x, labels = {"a": torch.randn(16, 4) * 3, "v": torch.randn(16, 3) * 0.1}, torch.randint(3, (16,))
    out = model(x)
    loss, _ = method.loss(out, labels)
    expected = F.cross_entropy(out.logits, labels) + sum(F.cross_entropy(out.modality_logits[m], labels)
                                                         for m in "av")
    torch.testing.assert_close(loss, expected)
    loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    stats = method.after_backward(out, labels)
    scores = [float(out.modality_logits[m].detach().softmax(1).gather(1, labels[:, None]).sum()) for m in "av"]
    lead = 0 if scores[0] > scores[1] else 1
    beta = 0.95 * math.exp(math.tanh(abs(scores[0] - scores[1])))
    assert float(stats[f"beta_{'av'[lead]}"]) == pytest.approx(beta, rel=1e-5)
    assert float(stats[f"beta_{'av'[1 - lead]}"]) == 0.0
    for name, p in model.named_parameters():
        pulled = name.startswith(f"encoders.{'av'[lead]}.")
        torch.testing.assert_close(p.grad, plain[name] + beta * 0.5 if pulled else plain[name], msg=name)
    method.after_epoch()
    for m in "av":
        weights = [p for p in model.encoders[m].parameters() if p.dim() > 1]
        assert method.traces[m] == [pytest.approx(sum(float(w.grad.square().mean()) for w in weights))]
    assert set(method.epoch_metrics()) == {"trace_a", "trace_v", "rate_a", "rate_v"}


def test_the_leader_is_chosen_on_the_scores_summed_over_ranks():
    """Another rank's batch where v is far ahead decides for this one too."""
    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [4], "v": [3]}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": "concat"})
    method = build_method(InfoRegParams(), ["a", "v"], "concat", seed=0)
    other_rank = torch.tensor([0.0, 1000.0])
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=0, all_reduce_sum=lambda t: t + other_rank))
    method.before_epoch(None)
    x, labels = {"a": torch.randn(16, 4) * 3, "v": torch.randn(16, 3) * 0.1}, torch.randint(3, (16,))
    out = model(x)
    method.loss(out, labels)[0].backward()
    stats = method.after_backward(out, labels)
    assert float(stats["beta_a"]) == 0.0 and float(stats["beta_v"]) > 0
