"""Late fusions against their definitions (PMR / OGM-GE reference code), on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mmflow.components.models.build import build_classifier
from mmflow.components.models.fusion import (ConcatFusion, FiLMFusion, GatedFusion, SharedHeadFusion, SumFusion,
                                             entropy_weights)
from mmflow.components.models.fusions import FUSIONS

torch.manual_seed(0)
Z = {"audio": torch.randn(3, 4), "visual": torch.randn(3, 2)}
DIMS = {"audio": 4, "visual": 2}


def linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def test_concat_is_one_linear_layer_whose_blocks_give_each_modalitys_logits():
    fusion = ConcatFusion(DIMS, 5)
    fused, per = fusion(Z)
    torch.testing.assert_close(fused, linear(fusion.fc, torch.cat([Z["audio"], Z["visual"]], dim=1)))
    w, b = fusion.fc.weight, fusion.fc.bias
    torch.testing.assert_close(per["audio"], Z["audio"] @ w[:, :4].T + b / 2)
    torch.testing.assert_close(per["visual"], Z["visual"] @ w[:, 4:].T + b / 2)
    torch.testing.assert_close(per["audio"] + per["visual"], fused)


def test_sum_adds_each_modalitys_own_linear_logits():
    fusion = SumFusion(DIMS, 5)
    fused, per = fusion(Z)
    for m in DIMS:
        torch.testing.assert_close(per[m], linear(fusion.fcs[m], Z[m]))
    torch.testing.assert_close(fused, per["audio"] + per["visual"])


def test_shared_applies_one_head_to_every_modality_and_weighs_each_by_its_entropy():
    # 2 classes: entropy ln 2 (uniform) against 0 weighs exp(0) : exp(ln 2) = 1 : 2
    torch.testing.assert_close(entropy_weights(torch.tensor([[math.log(2)], [0.0]])), torch.tensor([[1 / 3], [2 / 3]]))
    z = {"audio": torch.randn(3, 4), "visual": torch.randn(3, 4)}
    fusion = SharedHeadFusion({"audio": 4, "visual": 4}, 5)
    fused, per = fusion(z)
    entropy = {}
    for m in z:
        torch.testing.assert_close(per[m], linear(fusion.fc, z[m]))
        p = per[m].softmax(1)
        entropy[m] = -(p * p.log()).sum(1, keepdim=True)
    top = torch.maximum(entropy["audio"], entropy["visual"])
    gate = {m: torch.exp(top - e) for m, e in entropy.items()}
    torch.testing.assert_close(fused, sum(gate[m] * per[m] for m in z) / sum(gate.values()))
    with pytest.raises(ValueError, match="one size"):
        SharedHeadFusion(DIMS, 5)


def test_shared_with_combine_sum_scales_the_sum_of_every_modality_by_a_learnt_boost_rate():
    z = {"audio": torch.randn(3, 4), "visual": torch.randn(3, 4)}
    fusion = SharedHeadFusion({"audio": 4, "visual": 4}, 5, combine="sum", boost_rate=0.5)
    fused, per = fusion(z)
    torch.testing.assert_close(fused, 0.5 * (linear(fusion.fc, z["audio"]) + linear(fusion.fc, z["visual"])))
    assert per.keys() == z.keys()
    fused.sum().backward()  # the boost rate is a parameter the optimizer trains
    assert any(p is fusion.boost_rate for p in fusion.parameters()) and fusion.boost_rate.grad is not None


def test_film_scales_and_shifts_the_second_modality_by_the_first():
    fusion = FiLMFusion(DIMS, 5)
    fused, per = fusion(Z)
    gamma_beta = linear(fusion.fc, Z["audio"])
    gamma, beta = gamma_beta[:, :2], gamma_beta[:, 2:]
    torch.testing.assert_close(fused, linear(fusion.fc_out, gamma * Z["visual"] + beta))
    assert per == {} and fusion.fc.weight.shape == (4, 4)


def test_gated_multiplies_the_second_modality_by_a_sigmoid_gate_of_the_first():
    fusion = GatedFusion(DIMS, 5, hidden=3)
    fused, per = fusion(Z)
    gate = torch.sigmoid(linear(fusion.fc_gate, Z["audio"]))
    torch.testing.assert_close(fused, linear(fusion.fc_out, gate * linear(fusion.fc_value, Z["visual"])))
    assert per == {} and fusion.fc_value.out_features == 3
    assert GatedFusion(DIMS, 5).fc_value.out_features == 2  # hidden defaults to the second modality's size


def classifier(fusion: str | dict, modalities: dict[str, list[int]]):
    return build_classifier({"modalities": modalities, "num_classes": 3, "hidden": [], "embedding_dim": 4,
                             "fusion": fusion})


@pytest.mark.parametrize("name", ["film", "gated"])
def test_two_modality_fusions_refuse_three(name):
    with pytest.raises(ValueError, match=f"fusion '{name}' combines exactly 2 modalities, the data has 3: a, b, c"):
        classifier(name, {"a": [1], "b": [1], "c": [1]})


def test_fusions_build_by_name_with_their_params_and_one_modality_gets_its_own_head():
    for name, kind in (("concat", ConcatFusion), ("sum", SumFusion), ("film", FiLMFusion), ("gated", GatedFusion)):
        assert type(classifier(name, {"a": [2], "b": [3]}).fusion) is kind
        assert type(classifier({"name": name}, {"a": [2], "b": [3]}).fusion) is kind
    assert classifier({"name": "gated", "hidden": 7}, {"a": [2], "b": [3]}).fusion.fc_value.out_features == 7
    alone = classifier("film", {"audio": [4]}).fusion
    assert type(alone) is SumFusion and list(alone.fcs) == ["audio"]
    assert [c.name for c in FUSIONS.choices(lambda c: c.capabilities["splits"])] == ["concat", "mmtm", "shared", "sum"]
    assert [c.name for c in FUSIONS.choices(lambda c: c.capabilities["stage"] == "intermediate")] == \
        ["centralnet", "mmtm"]
