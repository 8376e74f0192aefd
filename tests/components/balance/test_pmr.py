"""PMR against the paper's equations, on tensors small enough to compute by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmflow.components.balance.base import ClassSums, TrainingContext, build_method
from mmflow.components.balance.methods.pmr import PMRParams, modality_coefficients, pmr_loss
from mmflow.components.balance.prototypes import update_prototypes

# Two classes, 1-d embeddings. Audio sits on its prototypes; visual sits half-way between its own.
LABELS = torch.tensor([0, 1])
PROTOS = {"audio": torch.tensor([[0.0], [2.0]]), "visual": torch.tensor([[0.0], [1.0]])}
EMBED = {"audio": torch.tensor([[0.0], [2.0]]), "visual": torch.tensor([[0.5], [0.5]])}
FUSED = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

P_AUDIO = 1 / (1 + math.exp(-2))  # softmax([-0, -2])[0]: prototype probability of the true class (Eq. 7)
S_AUDIO, S_VISUAL = 2 * P_AUDIO, 2 * 0.5  # batch sums (Eq. 8)
RHO = S_AUDIO / S_VISUAL
CE = math.log(1 + math.exp(-1))  # cross-entropy of the fused logits
PCE_VISUAL = math.log(2)  # Eq. 9: -log 0.5 on both samples
H_AUDIO = -(P_AUDIO * math.log(P_AUDIO) + (1 - P_AUDIO) * math.log(1 - P_AUDIO))  # entropy of audio's softmax


def test_rho_and_paper_coefficients_when_modality_0_dominates():
    loss, stats = pmr_loss(FUSED, EMBED, LABELS, PROTOS, alpha=2.0, mu=0.0, coefficient="paper")
    gamma = min(max(RHO - 1, 0), 1)  # Eq. 11, rho >= 1
    assert stats["rho"] == pytest.approx(RHO)
    assert stats["coef_audio"] == 0 and stats["coef_visual"] == pytest.approx(gamma)
    assert stats["score_audio"] == pytest.approx(P_AUDIO) and stats["score_visual"] == pytest.approx(0.5)
    assert float(loss) == pytest.approx(CE + 2.0 * gamma * PCE_VISUAL)  # Eq. 10
    no_per, _ = pmr_loss(FUSED, EMBED, LABELS, PROTOS, alpha=2.0, mu=0.5)  # PER is off unless asked for
    assert float(no_per) == pytest.approx(float(loss))


def test_per_subtracts_mu_gamma_times_the_dominant_entropy():
    loss, stats = pmr_loss(FUSED, EMBED, LABELS, PROTOS, alpha=2.0, mu=0.5, coefficient="paper", regularize=True)
    gamma = RHO - 1
    assert float(loss) == pytest.approx(CE + 2.0 * gamma * PCE_VISUAL - 0.5 * gamma * H_AUDIO)  # Eq. 13
    unregularized, _ = pmr_loss(FUSED, EMBED, LABELS, PROTOS, alpha=2.0, mu=0.5, regularize=False)
    assert float(unregularized) == pytest.approx(CE + 2.0 * gamma * PCE_VISUAL)


def test_binary_coefficient_is_the_official_codes_one_or_zero():
    loss, stats = pmr_loss(FUSED, EMBED, LABELS, PROTOS, alpha=3.0, mu=0.0, coefficient="binary")
    assert stats["coef_audio"] == 0 and stats["coef_visual"] == 1
    assert float(loss) == pytest.approx(CE + 3.0 * PCE_VISUAL)


def test_when_modality_1_dominates_beta_is_one_over_rho_minus_one():
    swapped = {"visual": EMBED["visual"], "audio": EMBED["audio"]}  # modality 0 is now the weak one
    protos = {"visual": PROTOS["visual"], "audio": PROTOS["audio"]}
    loss, stats = pmr_loss(FUSED, swapped, LABELS, protos, alpha=1.0, mu=0.0)
    rho = S_VISUAL / S_AUDIO
    assert rho < 1 and stats["rho"] == pytest.approx(rho)
    beta = min(max(1 / rho - 1, 0), 1)
    assert stats["coef_visual"] == pytest.approx(beta) and stats["coef_audio"] == 0
    assert float(loss) == pytest.approx(CE + beta * PCE_VISUAL)


def test_coefficient_is_clipped_at_one():
    embeddings = {"audio": EMBED["audio"], "visual": torch.tensor([[0.8], [0.2]])}  # visual leans wrong
    p_visual = math.exp(-0.8) / (math.exp(-0.8) + math.exp(-0.2))
    _, stats = pmr_loss(FUSED, embeddings, LABELS, PROTOS, alpha=1.0, mu=0.0)
    assert stats["rho"] == pytest.approx(S_AUDIO / (2 * p_visual)) and stats["rho"] > 2
    assert stats["coef_visual"] == 1.0


def test_three_modalities_follow_the_k_modal_rule():
    scores = torch.tensor([1.2, 2.0, 0.8])
    paper = modality_coefficients(scores, "paper")
    torch.testing.assert_close(paper, torch.tensor([2.0 / 1.2 - 1, 0.0, 1.0]))  # clip(0, s_dom/s_m - 1, 1)
    binary = modality_coefficients(scores, "binary")
    torch.testing.assert_close(binary, torch.tensor([1.0, 0.0, 1.0]))
    ties = modality_coefficients(torch.tensor([1.0, 1.0]), "paper")
    torch.testing.assert_close(ties, torch.tensor([0.0, 0.0]))  # rho = 1: gamma = clip(0) = 0
    torch.testing.assert_close(modality_coefficients(torch.tensor([1.0, 1.0, 0.5]), "binary"),
                               torch.tensor([0.0, 0.0, 1.0]))  # a tie with the dominant is not weaker


def test_three_modalities_loss_and_per_on_the_dominant():
    labels = torch.tensor([0, 1])
    protos = {m: torch.tensor([[0.0], [2.0]]) for m in "abc"}
    embeddings = {"a": torch.tensor([[0.5], [1.5]]), "b": torch.tensor([[0.0], [2.0]]), "c": torch.tensor([[1.0], [1.0]])}
    loss, stats = pmr_loss(FUSED, embeddings, labels, protos, alpha=1.0, mu=0.2, regularize=True)
    p = {"a": 1 / (1 + math.exp(-1)), "b": 1 / (1 + math.exp(-2)), "c": 0.5}  # true-class probabilities
    coef = {m: min(max(p["b"] / p[m] - 1, 0), 1) for m in "ac"}
    pce = {m: -math.log(p[m]) for m in "ac"}
    h_b = -(p["b"] * math.log(p["b"]) + (1 - p["b"]) * math.log(1 - p["b"]))
    expected = CE + coef["a"] * pce["a"] + coef["c"] * pce["c"] - 0.2 * max(coef.values()) * h_b
    assert stats["coef_b"] == 0 and stats["coef_a"] == pytest.approx(coef["a"])
    assert stats["rho"] == pytest.approx(p["b"] / p["c"])
    assert float(loss) == pytest.approx(expected)


def test_pce_of_the_weak_modality_does_not_touch_the_dominant_encoder():
    torch.manual_seed(0)
    enc = {"audio": torch.nn.Linear(3, 2), "visual": torch.nn.Linear(3, 2)}
    x = torch.randn(8, 3)
    labels = torch.tensor([0, 1] * 4)
    with torch.no_grad():  # audio's prototypes fit it well, visual's do not
        protos = {m: torch.stack([enc[m](x)[labels == c].mean(0) for c in (0, 1)]) for m in enc}
        protos["visual"] = protos["visual"] + 3.0
    embeddings = {m: e(x) for m, e in enc.items()}
    loss, stats = pmr_loss(torch.zeros(8, 2), embeddings, labels, protos, alpha=1.0, mu=0.0)
    assert stats["coef_visual"] > 0 and stats["coef_audio"] == 0
    loss.backward()
    assert enc["visual"].weight.grad.abs().sum() > 0
    assert enc["audio"].weight.grad is None or enc["audio"].weight.grad.abs().sum() == 0


def test_missing_classes_keep_their_prototype_and_stay_finite():
    sums, counts = torch.tensor([[2.0, 2.0], [0.0, 0.0], [3.0, 0.0]]), torch.tensor([2.0, 0.0, 1.0])
    first = update_prototypes(None, sums, counts)
    torch.testing.assert_close(first, torch.tensor([[1.0, 1.0], [0.0, 0.0], [3.0, 0.0]]))
    previous = torch.tensor([[5.0, 5.0], [7.0, 7.0], [1.0, 1.0]])
    blended = update_prototypes(previous, sums, counts, eps=0.5)
    torch.testing.assert_close(blended, torch.tensor([[3.0, 3.0], [7.0, 7.0], [2.0, 0.5]]))  # Eq. 12
    assert torch.isfinite(update_prototypes(None, torch.zeros(3, 2), torch.zeros(3))).all()


def test_the_method_blends_prototypes_with_momentum_eps_each_epoch():
    pmr = build_method(PMRParams(eps=0.25, proto_fraction=0.3), ["audio", "visual"], "concat", seed=0)
    assert pmr.needs.prototype_fraction == 0.3  # the loop takes prototypes from this share of batches
    counts = torch.tensor([2.0, 1.0])
    pmr.before_epoch(ClassSums({"audio": torch.tensor([[4.0], [3.0]]), "visual": torch.tensor([[2.0], [5.0]])}, counts))
    prototypes = pmr.state_dict()["prototypes"]
    torch.testing.assert_close(prototypes["audio"], torch.tensor([[2.0], [3.0]]))  # first: the plain means
    pmr.before_epoch(ClassSums({"audio": torch.tensor([[8.0], [7.0]]), "visual": torch.tensor([[2.0], [1.0]])}, counts))
    prototypes = pmr.state_dict()["prototypes"]
    torch.testing.assert_close(prototypes["audio"], torch.tensor([[0.25 * 2 + 0.75 * 4], [0.25 * 3 + 0.75 * 7]]))
    torch.testing.assert_close(prototypes["visual"], torch.tensor([[1.0], [0.25 * 5 + 0.75 * 1]]))


def test_the_method_applies_per_in_the_first_per_epochs_and_pce_in_its_window_only():
    from mmflow.components.models.multimodal import MultimodalOutput

    pmr = build_method(PMRParams(alpha=2.0, mu=0.5, per_epochs=2, start_epoch=1, end_epoch=3), ["audio", "visual"],
                       "concat", seed=0)
    pmr.load_state_dict({"prototypes": PROTOS})
    pmr.bind(TrainingContext(None, torch.device("cpu"), epochs=10))
    out = MultimodalOutput(FUSED, EMBED, {})
    gamma = RHO - 1
    expected = {0: CE,  # before the window: plain cross-entropy
                1: CE + 2.0 * gamma * PCE_VISUAL - 0.5 * gamma * H_AUDIO,  # PCE and PER (epoch 1 < per_epochs)
                2: CE + 2.0 * gamma * PCE_VISUAL,  # PER is over
                3: CE + 2.0 * gamma * PCE_VISUAL,  # last epoch of the window, inclusive
                4: CE}
    for epoch, loss in expected.items():
        pmr.context.epoch = epoch
        found, stats = pmr.loss(out, LABELS)
        assert float(found) == pytest.approx(loss), epoch
        assert ("rho" in stats) == (1 <= epoch <= 3)
