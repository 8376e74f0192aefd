"""OPM against the official code's rule: drop probabilities, the dropped and rescaled embeddings, the schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.opm import OPMParams, drop_probabilities
from mmflow.components.models.build import build_classifier
from mmflow.components.models.multimodal import MultimodalOutput
from mmflow.components.tasks.training_params import TrainClassifierParams


def test_only_the_leading_modality_is_dropped_more_the_more_it_leads():
    q = drop_probabilities(torch.tensor([30.0, 10.0]), q_base=0.5, lam=0.5)
    torch.testing.assert_close(q, torch.tensor([0.5 * (1 + 0.5 * math.tanh(2.0)), 0.0]))
    assert drop_probabilities(torch.tensor([10.0, 10.0]), 0.5, 0.5).tolist() == [0.0, 0.0]
    assert drop_probabilities(torch.tensor([100.0, 1.0]), 0.9, 1.0).tolist() == [1.0, 0.0]  # clipped
    three = drop_probabilities(torch.tensor([6.0, 3.0, 3.0]), 0.4, 1.0)  # 6 / mean(3, 3) = 2
    torch.testing.assert_close(three, torch.tensor([0.4 * (1 + math.tanh(1.0)), 0.0, 0.0]))


def setup(**params):
    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [4], "v": [3]}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": "concat"})
    method = build_method(OPMParams(**params), ["a", "v"], "concat", seed=0)
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=0))
    x, labels = {"a": torch.randn(8, 4), "v": torch.randn(8, 3)}, torch.randint(3, (8,))
    return model, method, model(x), labels


def test_a_modality_dropped_for_certain_is_zeroed_and_the_rest_rescaled():
    """q_a = 1 (a leads by far, q_base 1), q_v = 0: a's embeddings are all zero, v's scaled by 1 / (1 - theta),
    theta = 6 / 12 (both embeddings have 6 dimensions), and every sample still counts."""
    model, method, out, labels = setup(q_base=1.0, lam=1.0, p_exe=1.0, warmup_epochs=0)
    a_leads = {"a": labels.new_zeros(8, 3).float().scatter(1, labels[:, None], 50.0), "v": torch.zeros(8, 3)}
    out = MultimodalOutput(out.logits, out.embeddings, a_leads)
    loss, stats = method.loss(out, labels)
    expected, _ = model.fusion({"a": torch.zeros_like(out.embeddings["a"]), "v": out.embeddings["v"] / 0.5})
    torch.testing.assert_close(loss, F.cross_entropy(expected, labels))
    assert float(stats["q_a"]) == 1.0 and float(stats["q_v"]) == 0.0 and float(stats["uncounted"]) == 0.0


def test_no_dropping_in_the_warm_up_or_in_batches_left_out():
    for params, epoch in (({"p_exe": 1.0, "warmup_epochs": 3}, 2), ({"p_exe": 0.0, "warmup_epochs": 0}, 5)):
        model, method, out, labels = setup(**params)
        method.context.epoch = epoch
        loss, stats = method.loss(out, labels)
        torch.testing.assert_close(loss, F.cross_entropy(out.logits, labels))
        assert stats == {}


def test_fusions_that_do_not_split_over_embeddings_are_refused_at_validation():
    for fusion in ("film", "gated"):
        with pytest.raises(ValueError, match=f"but {fusion} does not split"):
            TrainClassifierParams.model_validate({"fusion": fusion, "method": "opm"})
    with pytest.raises(ValueError, match="but mmtm does not split"):
        TrainClassifierParams.model_validate({"encoder": "cnn", "fusion": "mmtm", "method": "opm"})
