"""MMCosine against its rule: scaled cosines of normalized embeddings and class weights, per modality, summed."""

from __future__ import annotations

import math

import pytest
import torch

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.mmcosine import MMCosineParams, cosine_logits
from mmflow.components.models.build import build_classifier
from mmflow.components.models.multimodal import MultimodalOutput
from mmflow.components.tasks.training_params import TrainClassifierParams


def test_cosines_of_normalized_embeddings_and_class_rows():
    z = {"a": torch.tensor([[3.0, 4.0]]), "v": torch.tensor([[0.0, -2.0]])}
    w = {"a": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "v": torch.tensor([[5.0, 5.0], [0.0, 1.0]])}
    cos = cosine_logits(z, w)
    torch.testing.assert_close(cos["a"], torch.tensor([[0.6, 0.8]]))
    torch.testing.assert_close(cos["v"], torch.tensor([[-1 / math.sqrt(2), -1.0]]))


@pytest.mark.parametrize("fusion, modalities", [("concat", "ab"), ("sum", "abc")])
def test_the_loss_is_cross_entropy_on_the_scaled_sum_and_blind_to_norms(fusion, modalities):
    torch.manual_seed(0)
    dims = {"a": 4, "b": 3, "c": 2}
    model = build_classifier({"modalities": {m: [dims[m]] for m in modalities}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": fusion})
    method = build_method(MMCosineParams(scaling=7.0), list(modalities), fusion, seed=0)
    method.bind(TrainingContext(model, torch.device("cpu")))
    x, labels = {m: torch.randn(8, dims[m]) for m in modalities}, torch.randint(3, (8,))
    out = model(x)
    loss, stats = method.loss(out, labels)
    weights = model.fusion.modality_weights()
    by_hand = 7.0 * sum(torch.nn.functional.normalize(out.embeddings[m], dim=1)
                        @ torch.nn.functional.normalize(weights[m], dim=1).T for m in modalities)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(by_hand, labels))
    assert {f"cos_{m}" for m in modalities} <= set(stats)
    # a modality's larger features or class weights change nothing (the plain fused loss does change)
    scaled = MultimodalOutput(out.logits, {**out.embeddings, "a": out.embeddings["a"] * 5}, out.modality_logits)
    torch.testing.assert_close(method.loss(scaled, labels)[0], loss)
    loss.backward()
    biases = [p for n, p in model.fusion.named_parameters() if n.endswith("bias")]
    assert all(p.grad is None for p in biases)  # no bias in the cosine logits


def test_fusions_without_a_linear_layer_per_modality_are_refused_at_validation():
    for fusion in ("film", "gated"):
        with pytest.raises(ValueError, match=f"the logits of {fusion} are no linear layer"):
            TrainClassifierParams.model_validate({"fusion": fusion, "method": "mmcosine"})
    TrainClassifierParams.model_validate({"encoder": "cnn", "fusion": "mmtm", "method": "mmcosine"})
