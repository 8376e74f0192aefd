"""The model's cost against hand counts: parameters and forward FLOPs per sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmflow.components.models.build import build_classifier
from mmflow.components.tasks.model_cost import flops_per_sample, parameter_count

ARCHITECTURE = {"modalities": {"a": [5], "b": [3]}, "num_classes": 4, "hidden": [8], "embedding_dim": 6,
                "fusion": "concat"}  # the `evaluated` fixture's model


def test_parameters_and_flops_of_a_small_concat_classifier():
    model = build_classifier(ARCHITECTURE).eval()
    # encoders 5-8-6 and 3-8-6, the fusion 12-4: weights and biases
    assert parameter_count(model) == (5 * 8 + 8 + 8 * 6 + 6) + (3 * 8 + 8 + 8 * 6 + 6) + (12 * 4 + 4)
    features = {"a": torch.randn(7, 5), "b": torch.randn(7, 3)}
    # 2 per multiply-add: the encoders' layers, the fused layer and each modality's block of it (its logits)
    expected = 2 * ((5 * 8 + 8 * 6) + (3 * 8 + 8 * 6) + 12 * 4 + 2 * (6 * 4))
    assert flops_per_sample(model, features) == expected


def test_eval_classifier_reports_the_models_cost(evaluated):
    from mmflow.components.tasks.classifier_eval import evaluate

    metrics = evaluate(evaluated / "model", evaluated / "train", evaluated / "test", batch_size=16)
    model = build_classifier(ARCHITECTURE)
    assert metrics["parameters"] == parameter_count(model)
    one = {"a": torch.zeros(1, 5), "b": torch.zeros(1, 3)}
    assert metrics["flops_per_sample"] == flops_per_sample(model.eval(), one)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's per-process peak reset")
def test_peak_memory_on_cpu_is_the_largest_resident_set_since_the_last_call(memory_spike):
    """The process's peak resident set only grows: an inline run's later steps reported its earlier ones' peak."""
    from mmflow.components.tasks.model_cost import peak_memory_mb

    cpu = torch.device("cpu")
    peak_memory_mb(cpu)  # reset
    memory_spike(128)
    with_block, since = peak_memory_mb(cpu), peak_memory_mb(cpu)
    assert with_block - since > 100


def test_peak_memory_on_a_gpu_is_the_largest_allocation_since_the_last_call():
    from mmflow.components.tasks.model_cost import peak_memory_mb

    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    device = torch.device("cuda")
    peak_memory_mb(device)  # reset
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device=device)  # 64 MiB
    del block
    assert peak_memory_mb(device) >= 64 and peak_memory_mb(device) < 64


def test_eval_classifier_adds_what_training_cost_when_its_cost_input_is_wired(evaluated, tmp_path):
    import json

    from mmflow.components.tasks.classification import EvalClassifierParams, eval_classifier
    from mmflow.engine import REGISTRY, StepContext

    cost = {"training_seconds": 5.0, "training_samples_per_s": 40.0, "training_peak_memory_mb": 300.0}
    (tmp_path / "cost.json").write_text(json.dumps(cost))  # a train.classifier step's `cost` output
    inputs = {"model": evaluated / "model", "train": evaluated / "train", "test": evaluated / "test"}
    params = EvalClassifierParams(contribution=False, probe_steps=0, noise_levels=[])
    spec = REGISTRY.get("eval.classifier")
    plain = eval_classifier(StepContext.standalone(spec, inputs, tmp_path / "plain", log=lambda _: None), params)
    assert not any(k.startswith("training_") for k in plain)
    costed = eval_classifier(StepContext.standalone(spec, {**inputs, "cost": tmp_path / "cost.json"},
                                                    tmp_path / "costed", log=lambda _: None), params)
    assert costed == {**plain, **cost}
    assert json.loads((tmp_path / "costed" / "metrics").read_text()) == costed


class Recurrent(torch.nn.Module):
    """A 2-layer bidirectional LSTM of 8 units over 4 features per step, then a 3-class head on every step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.lstm(features["a"])[0])


@pytest.mark.parametrize("fused", [True, False], ids=["fused kernel", "matrix products"])
def test_a_recurrent_layer_counts_its_matrix_products_whichever_kernel_runs_it(fused):
    """On CPU, torch's counter sees no FLOPs in mkldnn's fused LSTM kernel, and all of them without it."""
    # per time step, both directions: 4 gates x 8 units from the input (4 features, then the 16 of layer 1) and from
    # the hidden state (8); then the head
    per_step = 2 * (32 * 4 + 32 * 8) + 2 * (32 * 16 + 32 * 8) + 16 * 3
    with torch.backends.mkldnn.flags(enabled=fused):
        assert flops_per_sample(Recurrent().eval(), {"a": torch.randn(2, 10, 4)}) == 2 * 10 * per_step
