"""Event localization: segment accuracy, PMR on event segments only, the workflow end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.pmr import PMRParams, pmr_penalty
from mmflow.components.models.localization_fusions import LOCALIZATION_FUSIONS
from mmflow.components.models.multimodal import MultimodalOutput
from mmflow.components.tasks.localization_eval import segment_accuracy

from ...conftest import REPO


def test_segment_accuracy_with_and_without_background():
    labels = torch.tensor([3, 3, 0, 1, 3, 2])  # 3 is background
    predicted = torch.tensor([3, 0, 0, 2, 3, 2])
    assert segment_accuracy(predicted, labels) == 4 / 6
    assert segment_accuracy(predicted, labels, background=3) == 2 / 3


def test_pmr_on_localization_leaves_background_segments_out_of_pce():
    torch.manual_seed(0)
    labels = torch.tensor([0, 2, 2, 1, 2, 0])  # 2 is background
    embeddings = {"audio": torch.randn(6, 4), "visual": torch.randn(6, 4)}
    prototypes = {"audio": torch.randn(3, 4), "visual": torch.randn(3, 4)}
    method = build_method(PMRParams(alpha=1.0), ["audio", "visual"], LOCALIZATION_FUSIONS.get("concat"), seed=0)
    method.load_state_dict({"prototypes": prototypes})
    method.bind(TrainingContext(None, torch.device("cpu"), epoch=0, background=2))
    logits = torch.randn(6, 3)
    loss, _ = method.loss(MultimodalOutput(logits, embeddings, {}), labels)
    events = labels != 2
    penalty, _ = pmr_penalty({m: z[events] for m, z in embeddings.items()}, labels[events], prototypes, alpha=1.0,
                             mu=0.0, coefficient="paper", regularize=False)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels) + penalty)
    moved = {m: z.clone() for m, z in embeddings.items()}
    moved["visual"][1] += 10  # a background segment's embedding: no effect on PCE
    moved_loss, _ = method.loss(MultimodalOutput(logits, moved, {}), labels)
    assert torch.allclose(moved_loss, loss)


def run_workflow(cli, tmp_path, data_sets):
    sets = ["executor=inline", "steps.shard.params.samples_per_shard=32", *data_sets]
    for step in ("concat", "concat_pmr", "dmrn", "dmrn_pmr"):
        sets += [f"steps.{step}.params.epochs=2", f"steps.{step}.params.batch_size=16",
                 f"steps.{step}.params.hidden=8", f"steps.{step}.params.attention_dim=8"]
    args = [a for s in sets for a in ("--set", s)]
    status, out, err = cli("run", REPO / "workflows" / "ave_localization.yaml", "--run-dir", tmp_path / "run", *args)
    assert status == 0, out + err
    return tmp_path / "run"


def test_the_localization_workflow_runs_on_synthetic_events(cli, tmp_path):
    run = run_workflow(cli, tmp_path, ["steps.data.params.train_size=64", "steps.data.params.test_size=16"])
    table = (run / "compare" / "outputs" / "table").read_text()
    assert all(name in table for name in ("eval_concat", "eval_concat_pmr", "eval_dmrn", "eval_dmrn_pmr"))
    metrics = json.loads((run / "eval_dmrn_pmr" / "metrics.json").read_text())
    assert metrics["test_segments"] == 160 and len(metrics["confusion_matrix"]) == 6
    assert sum(map(sum, metrics["confusion_matrix"])) == 160
    assert {"accuracy_audio_probe", "accuracy_visual_probe", "event_accuracy", "class_accuracy/background"} <= set(metrics)
    history = json.loads((run / "concat_pmr" / "metrics.json").read_text())["history"]
    assert "pmr_rho" in history[-1] and len(history) == 2
    assert "| parameters | flops_per_sample | training_samples_per_s | training_peak_memory_mb |" in table
    from mmflow.components.models.build import load_classifier
    from mmflow.components.tasks.model_cost import parameter_count

    model, _ = load_classifier(run / "dmrn_pmr" / "outputs" / "model")
    assert metrics["parameters"] == parameter_count(model) and metrics["flops_per_sample"] > 0
    cost = json.loads((run / "dmrn_pmr" / "outputs" / "cost").read_text())
    assert {k: metrics[k] for k in cost} == cost  # what training cost, from the training step


def test_the_localization_workflow_runs_on_ave_format_feature_files(cli, tmp_path):
    from ..data.test_events import write_ave_features

    root = write_ave_features(tmp_path / "features", videos=12, regions=3, visual_dim=16)
    run = run_workflow(cli, tmp_path, ["steps.data.component=data.ave_features", f"steps.data.params={{root: {root}}}"])
    metrics = json.loads((run / "eval_concat_pmr" / "metrics.json").read_text())
    assert metrics["test_segments"] == 20 and len(metrics["confusion_matrix"]) == 29
    assert json.loads((run / "dmrn_pmr" / "metrics.json").read_text())["epochs"] == 2


def test_avel_margin_loss_is_the_soft_margin_loss_of_the_softmax():
    from mmflow.components.models.localization import avel_margin_loss

    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
    p = torch.softmax(logits, 1)
    y = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    hand = -(y * torch.log(torch.sigmoid(p)) + (1 - y) * torch.log(torch.sigmoid(-p))).mean(1).mean()
    assert torch.allclose(avel_margin_loss(logits, labels), hand)


def test_the_original_avel_loss_trains_through_the_loop(cli, write_workflow, tmp_path):
    wf = write_workflow("""
        name: margin
        executor: inline
        steps:
          data: {component: data.synthetic_events, params: {train_size: 32, test_size: 8}}
          shard: {component: data.shard, inputs: {dataset: "${steps.data.outputs.dataset}"}}
          train:
            component: train.localization
            inputs: {train: "${steps.shard.outputs.train}"}
            params: {epochs: 2, batch_size: 16, hidden: 8, attention_dim: 8, loss: avel_margin}
        """)
    status, out, err = cli("run", wf, "--run-dir", tmp_path / "run")
    assert status == 0, out + err
    losses = [h["loss"] for h in json.loads((tmp_path / "run" / "train" / "metrics.json").read_text())["history"]]
    assert all(0 < loss < 1 for loss in losses)  # a soft-margin loss of probabilities, not a cross-entropy (~1.8)


def test_localization_params_refuse_an_embedding_size_they_would_ignore():
    from pydantic import ValidationError

    from mmflow.components.tasks.training_params import TrainLocalizationParams

    with pytest.raises(ValidationError, match="set hidden, not embedding_dim"):
        TrainLocalizationParams(embedding_dim=64)
    assert TrainLocalizationParams(hidden=16).architecture(
        {"modalities": {"a": {"shape": [4, 3]}, "v": {"shape": [4, 2, 2, 5]}}, "num_classes": 3}, ["a", "v"])["hidden"] == 16


def test_localization_metrics_from_known_segment_outputs(monkeypatch):
    from types import SimpleNamespace

    from mmflow.components.tasks import localization_eval

    labels = torch.tensor([0, 1, 2, 2, 1, 2])  # 3 classes, 2 is background
    logits = {"fused": F.one_hot(torch.tensor([0, 2, 2, 1, 1, 2]), 3).float(),
              "audio": F.one_hot(torch.tensor([0, 1, 2, 2, 0, 0]), 3).float()}
    gen = torch.Generator().manual_seed(0)

    def embed(segment_labels):  # audio: the label, off-centre and tiny, beside loud noise; visual: noise only
        n = len(segment_labels)
        informative = torch.tensor([1000.0, -500.0, 3.0]) + 1e-3 * F.one_hot(segment_labels, 3)
        return {"audio": torch.cat([informative + 1e-5 * torch.randn(n, 3, generator=gen),
                                    100 * torch.randn(n, 1, generator=gen)], dim=1),
                "visual": torch.randn(n, 4, generator=gen)}

    train_labels = torch.arange(60) % 3
    outputs = {"test": (logits, embed(labels), labels), "train": ({}, embed(train_labels), train_labels)}
    asked = []

    def segment_outputs(model, shards, batch_size):
        asked.append((shards, batch_size))
        return outputs[shards]

    monkeypatch.setattr(localization_eval, "load_classifier", lambda folder: (None, {"num_classes": 3}))
    monkeypatch.setattr(localization_eval, "ShardReader", lambda folder: SimpleNamespace(manifest={"background": 2}))
    monkeypatch.setattr(localization_eval, "segment_outputs", segment_outputs)
    monkeypatch.setattr(localization_eval, "model_cost", lambda model, shards: {"parameters": 7})
    metrics = localization_eval.evaluate_localization("model", "train", "test", batch_size=4, probe_steps=200, seed=0)
    assert asked == [("test", 4), ("train", 4)]
    assert metrics.pop("accuracy_audio_probe") == 1.0 and metrics.pop("accuracy_visual_probe") < 0.9
    assert metrics.pop("confusion_matrix") == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]  # rows: true class
    assert metrics == pytest.approx({
        "accuracy": 4 / 6, "event_accuracy": 2 / 3,  # events: segments 0, 1, 4
        "class_accuracy/0": 1.0, "class_accuracy/1": 0.5, "class_accuracy/background": 2 / 3,
        "accuracy_audio_head": 4 / 6, "test_segments": 6, "event_segments": 3, "chance": 0.5, "parameters": 7})


def test_a_class_the_test_split_lacks_gets_no_accuracy_and_no_event_accuracy_is_nan():
    import math

    from mmflow.components.tasks.localization_eval import segment_accuracy

    assert math.isnan(segment_accuracy(torch.tensor([2, 2]), torch.tensor([2, 2]), background=2))
    assert segment_accuracy(torch.tensor([2, 0]), torch.tensor([2, 2])) == 0.5
