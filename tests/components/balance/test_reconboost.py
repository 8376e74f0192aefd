"""ReconBoost against its rule (the authors' code): the boosting loss, the stages, the phases' optimizer state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.reconboost import ReconBoostParams, boosting_loss, stage_phase
from mmflow.components.models.build import build_classifier
from mmflow.components.tasks.training_params import TrainClassifierParams

SHARED_SUM = {"name": "shared", "combine": "sum", "boost_rate": 0.5}


def test_the_boosting_loss_weighs_each_sample_by_how_badly_the_rest_of_the_ensemble_does():
    labels = torch.tensor([0, 1])
    # softmax of (log 3, 0) gives class 0 0.75; of (0, log 4) class 1 0.8
    logits = torch.tensor([[math.log(3), 0.0], [0.0, math.log(4)]], requires_grad=True)
    # the rest: uniform on sample 0 (q = 0.5), 0.25 on the true class of sample 1
    rest = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]], requires_grad=True)
    loss = boosting_loss(logits, rest, labels, weight1=5.0, weight2=1.0)
    # -(w1 - w2 q) log p, averaged over samples and divided by the 2 classes
    expected = (-(5 - 0.5) * math.log(0.75) - (5 - 0.25) * math.log(0.8)) / 2 / 2
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert rest.grad is None and logits.grad is not None  # the rest of the ensemble only weighs


def test_stages_boost_each_modality_in_turn_then_correct_the_ensemble():
    phases = [stage_phase(e, ["a", "b"], boost_epochs=2, correction_epochs=1) for e in range(7)]
    assert phases == [(0, "a"), (0, "a"), (0, None), (1, "b"), (1, "b"), (1, None), (2, "a")]
    assert [stage_phase(e, ["a", "b", "c"], 1, 0)[1] for e in range(4)] == ["a", "b", "c", "a"]


def setup(modalities: str = "ab", fusion=SHARED_SUM):
    torch.manual_seed(0)
    model = build_classifier({"modalities": {m: [3] for m in modalities}, "num_classes": 3, "hidden": [4],
                              "embedding_dim": 5, "fusion": fusion})
    x = {m: torch.randn(8, 3) for m in modalities}
    return model, x, torch.randint(3, (8,))


def bound(model, modalities, params, epoch, optimizer=None):
    method = build_method(params, list(modalities), "shared", seed=0)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=epoch, optimizer=optimizer))
    method.before_epoch(None)
    return method


def test_a_boosting_epoch_trains_its_modality_and_the_head_against_the_boosted_rest():
    model, x, labels = setup("abc")
    params = ReconBoostParams(boost_epochs=1, correction_epochs=1)
    method = bound(model, "abc", params, epoch=2)  # stage 1, boosting b
    out = model(x)
    loss, stats = method.loss(out, labels)
    rest = 0.5 * (out.modality_logits["a"] + out.modality_logits["c"])
    torch.testing.assert_close(loss, boosting_loss(out.modality_logits["b"], rest, labels, 5.0, 1.0))
    torch.testing.assert_close(stats["loss_b"], loss.detach())
    loss.backward()
    trained = {n.split(".")[1] for n, p in model.named_parameters() if p.grad is not None and n.startswith("encoders")}
    assert trained == {"b"} and model.fusion.fc.weight.grad is not None and model.fusion.boost_rate.grad is None


def test_a_correction_epoch_trains_the_ensemble_on_the_fused_loss():
    model, x, labels = setup()
    method = bound(model, "ab", ReconBoostParams(boost_epochs=1, correction_epochs=1), epoch=1)
    out = model(x)
    fused = 0.5 * (out.modality_logits["a"] + out.modality_logits["b"])
    torch.testing.assert_close(method.loss(out, labels)[0], F.cross_entropy(fused, labels))
    assert method.epoch_metrics() == {"boost_rate": 0.5}


def test_outside_its_window_training_is_joint():
    model, x, labels = setup()
    method = bound(model, "ab", ReconBoostParams(start_epoch=3), epoch=1)
    out = model(x)
    torch.testing.assert_close(method.loss(out, labels)[0], F.cross_entropy(out.logits, labels))


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_with_sum_and_concat_the_rest_is_the_other_modalities_logits(fusion):
    model, x, labels = setup(fusion=fusion)
    method = bound(model, "ab", ReconBoostParams(), epoch=8)  # stage 1 (epochs 8-15) boosts b first
    out = model(x)
    expected = boosting_loss(out.modality_logits["b"], out.modality_logits["a"], labels, 5.0, 1.0)
    torch.testing.assert_close(method.loss(out, labels)[0], expected)
    assert method.epoch_metrics() == {}


@pytest.mark.parametrize("fresh", [True, False])
def test_each_phase_starts_with_no_optimizer_state_as_the_authors_new_sgd_does(fresh):
    model, x, labels = setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    params = ReconBoostParams(boost_epochs=2, correction_epochs=1, start_epoch=1, fresh_optimizer=fresh)
    kept = []
    for epoch in range(6):  # joint, then boost a (2 epochs), correct, boost b (2 epochs)
        method = bound(model, "ab", params, epoch, optimizer)
        kept.append(len(optimizer.state) > 0)
        loss, _ = method.loss(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    # each epoch's state comes from the steps before; a phase starts at epochs 1, 3 and 4
    assert kept == ([False, False, True, False, False, True] if fresh else [False] + [True] * 5)


def test_validation_refuses_fusions_that_are_no_sum_of_the_modalities():
    for fusion, shown in [("shared", "shared with combine: entropy"), ("film", "film"), ("mmtm", "mmtm")]:
        with pytest.raises(ValueError, match=f"fuses with {shown}: use fusion shared \\(combine: sum\\)"):
            TrainClassifierParams.model_validate({"method": {"name": "reconboost"}, "fusion": fusion,
                                                  "encoder": "cnn" if fusion == "mmtm" else "mlp"})
    TrainClassifierParams.model_validate({"method": {"name": "reconboost"}, "fusion": SHARED_SUM})
