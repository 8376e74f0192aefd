"""Gradient-Blending: the weight formulas on hand-computed losses, the blended loss, the online schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.gblend.estimate import ProbeLosses, blend_weights, with_fused_floor
from mmflow.components.balance.methods.gblend.method import GBlend, GBlendParams
from mmflow.components.models.multimodal import MultimodalOutput
from mmflow.components.tasks.training_params import TrainClassifierParams

# (train_before, val_before, train_after, val_after) per head
LOSSES = {
    "a": ProbeLosses(1.0, 1.2, 0.6, 1.0),  # O 0.2 -> 0.4: G 0.2, dO 0.2
    "b": ProbeLosses(1.0, 1.1, 0.8, 0.8),  # O 0.1 -> 0.0: G 0.3, dO -0.1
    "fused": ProbeLosses(1.0, 1.3, 0.5, 0.9),  # O 0.3 -> 0.4: G 0.4, dO 0.1
}


def test_paper_weights_are_g_over_squared_delta_o_normalised():
    found = blend_weights(LOSSES, "paper")
    # raw: a 0.2 / 0.04 = 5, b 0.3 / 0.01 = 30, fused 0.4 / 0.01 = 40; sum 75
    assert found.weights == pytest.approx({"a": 5 / 75, "b": 30 / 75, "fused": 40 / 75})
    assert sum(found.weights.values()) == pytest.approx(1)
    assert found.generalization == pytest.approx({"a": 0.2, "b": 0.3, "fused": 0.4})
    assert found.delta_overfitting == pytest.approx({"a": 0.2, "b": -0.1, "fused": 0.1})
    assert found.overfitting == pytest.approx({"a": 0.4, "b": 0.0, "fused": 0.4})
    assert not found.fallback


def test_multibench_weights_are_val_loss_over_squared_gap_after():
    found = blend_weights(LOSSES, "multibench", min_delta_o=0.1)
    # raw: a 1.0 / 0.4^2 = 6.25, b 0.8 / max(0, 0.1)^2 = 80, fused 0.9 / 0.4^2 = 5.625
    total = 6.25 + 80 + 5.625
    assert found.weights == pytest.approx({"a": 6.25 / total, "b": 80 / total, "fused": 5.625 / total})


def test_delta_o_is_clamped_away_from_zero():
    flat = {"a": ProbeLosses(1.0, 1.0, 0.9, 0.9), "fused": ProbeLosses(1.0, 1.2, 0.6, 1.0)}  # a: dO = 0
    found = blend_weights(flat, "paper", min_delta_o=0.01)
    raw_a, raw_fused = 0.1 / 0.01 ** 2, 0.2 / 0.2 ** 2
    assert found.weights["a"] == pytest.approx(raw_a / (raw_a + raw_fused))
    assert all(torch.isfinite(torch.tensor(list(found.weights.values()))))


def test_a_head_that_got_worse_gets_no_weight_and_none_improving_falls_back_to_uniform():
    worse = {**LOSSES, "b": ProbeLosses(1.0, 1.0, 0.5, 1.1)}  # G = -0.1
    found = blend_weights(worse, "paper")
    assert found.weights["b"] == 0 and found.weights["a"] == pytest.approx(5 / 45)
    all_worse = {h: ProbeLosses(1.0, 1.0, 0.5, 1.2) for h in ("a", "b", "fused")}
    found = blend_weights(all_worse, "paper")
    assert found.fallback and found.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "fused": 1 / 3})


def test_online_schedule_warms_up_then_every_super_epoch():
    params = GBlendParams(mode="online", warmup_super_epoch=10, super_epoch=5)
    assert params.estimate_epochs(30) == [0, 10, 15, 20, 25]
    assert params.estimate_epochs(8) == [0]
    assert GBlendParams(mode="online", warmup_super_epoch=2, super_epoch=3).estimate_epochs(9) == [0, 2, 5, 8]


def gblend(params: GBlendParams, modalities: list[str], fusion: str = "concat", probes=None, epochs: int = 1,
           model=None) -> GBlend:
    """The method on `fusion`, bound to a loop of `epochs` epochs whose probe trainings are `probes(heads)`."""
    method = build_method(params, modalities, fusion, seed=0)
    method.context = TrainingContext(model, torch.device("cpu"), epochs=epochs, epoch=0)
    if probes is not None:
        method.probes = FakeProbes(probes)
    return method


class FakeProbes:
    """Stands in for the probe trainings: heads -> their losses; records when probes start and are waited for."""

    def __init__(self, losses) -> None:
        self.fn = losses
        self.events: list[tuple[str, int]] = []

    def start(self, heads: list[str], draw: int):
        self.events.append(("start", draw))

        def losses() -> dict[str, ProbeLosses]:
            self.events.append(("wait", draw))
            return self.fn(heads)

        return losses


def train_epochs(method: GBlend, epochs: int) -> tuple[list[dict], list[dict]]:
    """The method's hooks over `epochs` epochs, as the training loop calls them: the weights each epoch trained
    with, and each epoch's metrics."""
    weights, metrics = [], []
    for epoch in range(epochs):
        method.context.epoch = epoch
        method.before_epoch(None)
        weights.append(dict(method.weights))
        method.after_epoch()
        metrics.append(method.epoch_metrics())
    return weights, metrics


def test_online_method_reestimates_at_super_epoch_starts_with_one_weight_per_head():
    calls = []

    def probes(heads):
        calls.append(list(heads))
        better = len(calls)  # each estimate differs, so a new estimate is visible
        return {h: ProbeLosses(1.0, 1.2, 0.6, 1.2 - 0.1 * (i + better)) for i, h in enumerate(heads)}

    params = GBlendParams(mode="online", warmup_super_epoch=2, super_epoch=2, overlap_probes=False)
    method = gblend(params, ["rgb", "flow", "audio"], probes=probes, epochs=6)
    assert method.needs.holdout == 0.08 and method.needs.modality_heads == "own" and method.needs.parallel_tasks == 4
    seen, metrics = train_epochs(method, 6)
    for epoch, found in enumerate(metrics):
        assert {k for k in found if k.startswith("weight/")} == {f"weight/{h}" for h in ("rgb", "flow", "audio",
                                                                                           "fused")}
        assert ("G/rgb" in found) == (epoch in (0, 2, 4))
    assert calls == [["rgb", "flow", "audio", "fused"]] * 3
    assert seen[0] == seen[1] != seen[2] == seen[3] != seen[4] == seen[5]  # the paper's order: training waits
    assert method.probes.events == [("start", 0), ("wait", 0), ("start", 2), ("wait", 2), ("start", 4), ("wait", 4)]


def test_online_probes_after_the_first_train_beside_the_first_epoch_of_their_super_epoch():
    """overlap_probes (the default): an estimate's probes start from the model at its super-epoch's start, that
    epoch trains with the weights before, and the new weights are in place (and in the checkpoint) at its end."""
    estimate = iter(range(1, 10))

    def probes(heads):
        better = next(estimate)
        return {h: ProbeLosses(1.0, 1.2, 0.6, 1.2 - 0.1 * (i + better)) for i, h in enumerate(heads)}

    method = gblend(GBlendParams(mode="online", warmup_super_epoch=2, super_epoch=2), ["a", "b"], probes=probes,
                    epochs=6)
    seen, metrics = train_epochs(method, 6)
    assert method.probes.events == [("start", 0), ("wait", 0), ("start", 2), ("wait", 2), ("start", 4), ("wait", 4)]
    assert seen[0] == seen[1] == seen[2] != seen[3] == seen[4] != seen[5]  # the first estimate is waited for
    assert [("G/a" in found) for found in metrics] == [True, False, True, False, True, False]
    assert [found["weight/a"] for found in metrics] == [seen[1]["a"], seen[2]["a"], seen[3]["a"], seen[4]["a"],
                                                        seen[5]["a"], seen[5]["a"]]  # after each epoch's end
    assert method.state_dict() == {"weights": seen[5]}


def test_online_method_keeps_its_weights_when_no_head_improved():
    estimates = iter([{"a": ProbeLosses(1, 1.2, 0.6, 1.0), "fused": ProbeLosses(1, 1.2, 0.6, 1.1)},
                      {"a": ProbeLosses(1, 1.0, 0.6, 1.1), "fused": ProbeLosses(1, 1.0, 0.6, 1.1)}])
    method = gblend(GBlendParams(mode="online", warmup_super_epoch=1, super_epoch=1), ["a"],
                    probes=lambda heads: next(estimates), epochs=2)
    seen, _ = train_epochs(method, 2)
    assert method.estimate.fallback and method.weights == seen[0]


def test_blended_loss_is_the_weighted_sum_of_head_losses():
    gen = torch.Generator().manual_seed(0)
    out = MultimodalOutput(torch.randn(4, 3, generator=gen), {}, {"a": torch.randn(4, 3, generator=gen),
                                                                  "b": torch.randn(4, 3, generator=gen)})
    labels = torch.tensor([0, 1, 2, 1])
    method = gblend(GBlendParams(weights={"a": 1, "b": 3, "fused": 4}), ["a", "b"])
    loss, stats = method.loss(out, labels)
    expected = (F.cross_entropy(out.modality_logits["a"], labels) + 3 * F.cross_entropy(out.modality_logits["b"], labels)
                + 4 * F.cross_entropy(out.logits, labels)) / 8
    assert loss.item() == pytest.approx(expected.item())
    assert method.needs.holdout == 0 and method.needs.parallel_tasks == 0  # offline: no holdout, no probes


def test_weights_must_name_every_head():
    import re

    def refused(message: str):
        return pytest.raises(ValueError, match=f"^{re.escape(message)}$")

    with refused("method gblend: weights must name exactly a, b, fused (missing: ['fused'], unknown: ['c'])"):
        gblend(GBlendParams(weights={"a": 1, "b": 1, "c": 1}), ["a", "b"])
    with refused("method gblend (offline) needs weights: give method.weights or wire inputs.weights to a "
                 "gblend.estimate step"):
        gblend(GBlendParams(), ["a", "b"])
    with pytest.raises(ValueError, match="online G-Blend estimates its own weights"):
        GBlendParams(mode="online", weights={"a": 1})
    with refused("method gblend calls the fused head 'fused': rename that modality"):
        gblend(GBlendParams(mode="online"), ["fused", "b"])


def concat_model_batch():
    """A concat model with each modality's own head and a batch."""
    from mmflow.components.models.build import build_classifier

    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [5], "b": [3]}, "num_classes": 3, "hidden": [8],
                              "embedding_dim": 4, "fusion": "concat", "modality_heads": "own"})
    inputs, labels = {"a": torch.randn(6, 5), "b": torch.randn(6, 3)}, torch.tensor([0, 1, 2, 0, 1, 2])
    return model, inputs, labels


def test_refitting_the_fused_head_leaves_the_encoders_blend_unchanged():
    model, inputs, labels = concat_model_batch()
    grads = {}
    for refit in (False, True):
        method = gblend(GBlendParams(weights={"a": 1, "b": 1, "fused": 0}, refit_fused_head=refit,
                                     min_fused_weight=0), ["a", "b"], model=model)
        model.zero_grad()
        method.loss(model(inputs), labels)[0].backward()
        grads[refit] = {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                        for name, p in model.named_parameters()}
    for name in grads[True]:
        if name.startswith("encoders."):
            torch.testing.assert_close(grads[True][name], grads[False][name])
    assert grads[False]["fusion.fc.weight"].abs().sum() == 0 < grads[True]["fusion.fc.weight"].abs().sum()


def test_the_paper_formula_is_the_default_and_an_unknown_one_is_named():
    assert blend_weights(LOSSES) == blend_weights(LOSSES, "paper")
    with pytest.raises(ValueError, match=r"^unknown G-Blend formula 'papr' \(paper or multibench\)$"):
        blend_weights(LOSSES, "papr")


def test_small_raw_weights_are_still_information():
    slow = {"a": ProbeLosses(1.0, 1.0, 0.0, 0.9), "fused": ProbeLosses(1.0, 1.0, 0.5, 1.0)}  # G 0.1 / dO 1 = 0.1
    found = blend_weights(slow, "paper")
    assert not found.fallback and found.weights == pytest.approx({"a": 1.0, "fused": 0.0})


def test_an_estimate_flattens_into_per_head_metrics():
    found = blend_weights({"a": LOSSES["a"], "fused": LOSSES["fused"]}, "paper")
    assert found.metrics() == pytest.approx({
        "weight/a": 5 / 45, "weight/fused": 40 / 45, "O/a": 0.4, "O/fused": 0.4, "G/a": 0.2, "G/fused": 0.4,
        "dO/a": 0.2, "dO/fused": 0.1, "fallback": 0.0})
    assert found.as_dict()["weights"] == found.weights


def test_online_estimates_use_the_methods_formula_and_clamp():
    flat = {"a": ProbeLosses(1.0, 1.0, 0.9, 0.9), "fused": ProbeLosses(1.0, 1.2, 0.6, 1.0)}  # a: dO = 0
    params = GBlendParams(mode="online", min_delta_o=0.05, formula="paper")
    method = gblend(params, ["a"], probes=lambda heads: flat)
    method.before_epoch(None)
    assert method.weights == pytest.approx(blend_weights(flat, "paper", min_delta_o=0.05).weights)
    assert method.weights != pytest.approx(blend_weights(flat, "paper").weights)


def test_the_weights_are_kept_with_checkpoints():
    method = gblend(GBlendParams(weights={"a": 1, "b": 3, "fused": 4}), ["a", "b"])
    assert method.state_dict() == {"weights": {"a": 1 / 8, "b": 3 / 8, "fused": 4 / 8}}
    online = gblend(GBlendParams(mode="online"), ["a", "b"])
    assert online.weights is None and online.estimate is None
    online.load_state_dict(method.state_dict())
    assert online.weights == method.weights


def test_gblend_refuses_mmtm_and_refits_only_late_fusions():
    params = GBlendParams(weights={"a": 1, "b": 1, "fused": 1}, refit_fused_head=True)
    with pytest.raises(ValueError, match="method gblend trains each modality's network alone in its probes, but "
                                         "mmtm couples the modality streams inside the encoders: use a late fusion "
                                         "or centralnet"):
        TrainClassifierParams(encoder="cnn", fusion="mmtm", method=params)
    GBlend.check(params, TrainClassifierParams(encoder="cnn", fusion="centralnet"))  # validation passes
    assert gblend(params, ["a", "b"], "centralnet").refits_fused_head is False
    assert gblend(params, ["a", "b"], "gated").refits_fused_head is True
    plain = GBlendParams(weights={"a": 1, "b": 1, "fused": 1}, refit_fused_head=False)
    assert gblend(plain, ["a", "b"], "gated").refits_fused_head is False


def test_the_fused_floor_raises_the_fused_weight_and_scales_the_rest():
    raised = with_fused_floor({"a": 0.25, "b": 0.75, "fused": 0.0}, 0.1)
    assert raised == pytest.approx({"a": 0.225, "b": 0.675, "fused": 0.1})
    assert sum(raised.values()) == pytest.approx(1)
    kept = {"a": 0.3, "b": 0.5, "fused": 0.2}
    assert with_fused_floor(kept, 0.1) == kept


@pytest.mark.parametrize("fusion, refit, fused_weight", [("concat", False, 0.1), ("concat", True, 0.0),
                                                         ("centralnet", True, 0.1)])
def test_a_fused_head_that_is_not_refit_never_gets_weight_zero(fusion, refit, fused_weight):
    """By default, or where the refit cannot apply, the fused weight is floored; the refit trains it otherwise."""
    no_fused_gain = {"a": ProbeLosses(1.0, 1.2, 0.6, 1.0), "b": ProbeLosses(1.0, 1.1, 0.8, 0.8),
                     "fused": ProbeLosses(1.0, 1.0, 0.5, 1.1)}  # the fused probe's val loss rose: G <= 0
    assert blend_weights(no_fused_gain).weights["fused"] == 0
    method = gblend(GBlendParams(mode="online", refit_fused_head=refit), ["a", "b"], fusion,
                    probes=lambda heads: no_fused_gain)
    method.before_epoch(None)
    assert method.weights["fused"] == pytest.approx(fused_weight)
    assert sum(method.weights.values()) == pytest.approx(1)
    offline = gblend(GBlendParams(weights={"a": 1, "b": 1, "fused": 0}, refit_fused_head=refit), ["a", "b"], fusion)
    assert offline.weights["fused"] == pytest.approx(fused_weight)


def test_the_refit_adds_the_fused_cross_entropy_of_detached_embeddings():
    model, inputs, labels = concat_model_batch()
    out = model(inputs)
    losses = {}
    for refit in (False, True):
        method = gblend(GBlendParams(weights={"a": 1, "b": 1, "fused": 2}, refit_fused_head=refit), ["a", "b"],
                        model=model)
        losses[refit] = method.loss(out, labels)[0].item()
    assert losses[True] == pytest.approx(losses[False] + F.cross_entropy(out.logits, labels).item())
