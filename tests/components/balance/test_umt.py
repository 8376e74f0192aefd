"""UMT against its rule (BalanceBenchmark's code): fused loss plus each embedding's distance to its teacher's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmflow.components.balance.base import TrainingContext, build_method
from mmflow.components.balance.methods.umt import UMTParams
from mmflow.components.models.build import build_classifier, save_classifier

SHAPES = {"a": [4], "b": [3]}


def model_of(modalities: dict[str, list[int]], seed: int, dim: int = 6):
    torch.manual_seed(seed)
    architecture = {"modalities": modalities, "num_classes": 3, "hidden": [5], "embedding_dim": dim,
                    "fusion": "concat"}
    return build_classifier(architecture), architecture


def saved(tmp_path, modalities: dict[str, list[int]], seed: int, dim: int = 6):
    model, architecture = model_of(modalities, seed, dim)
    folder = tmp_path / f"teacher-{'-'.join(modalities)}-{seed}"
    save_classifier(folder, model, architecture)
    return folder, model


def bound(tmp_path, params=UMTParams(), epoch: int = 0, teachers=None):
    student, _ = model_of(SHAPES, seed=0)
    paths = teachers if teachers is not None else [saved(tmp_path, {m: s}, seed=i + 1)[0]
                                                   for i, (m, s) in enumerate(SHAPES.items())]
    method = build_method(params, list(SHAPES), "concat", seed=0)
    method.bind(TrainingContext(student, torch.device("cpu"), epoch=epoch, teachers=paths))
    return method, student


def batch():
    torch.manual_seed(9)
    return {"a": torch.randn(8, 4), "b": torch.randn(8, 3)}, torch.randint(3, (8,))


def test_the_loss_adds_scaling_times_each_embeddings_squared_distance_to_its_teacher(tmp_path):
    method, student = bound(tmp_path, UMTParams(scaling=10.0))
    teachers = {m: saved(tmp_path, {m: s}, seed=i + 1)[1].eval() for i, (m, s) in enumerate(SHAPES.items())}
    x, labels = batch()
    out = student(method.prepare_inputs(x))
    loss, stats = method.loss(out, labels)
    with torch.no_grad():
        targets = {m: teachers[m].encoders[m](x[m]) for m in SHAPES}
    distances = {m: ((out.embeddings[m] - targets[m]) ** 2).mean() for m in SHAPES}
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, labels) + 10.0 * sum(distances.values()))
    torch.testing.assert_close(stats["distill_a"], distances["a"].detach())
    loss.backward()  # the teachers stay as they are: frozen, no gradient
    assert all(not p.requires_grad and p.grad is None for t in method.teachers.values() for p in t.parameters())
    assert all(not t.training for t in method.teachers.values())


def test_outside_its_window_the_loss_is_the_fused_one(tmp_path):
    method, student = bound(tmp_path, UMTParams(start_epoch=1), epoch=0)
    x, labels = batch()
    out = student(method.prepare_inputs(x))
    loss, stats = method.loss(out, labels)
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, labels))
    assert stats == {}


def test_teachers_must_be_one_uni_modal_model_per_modality(tmp_path):
    a, _ = saved(tmp_path, {"a": [4]}, seed=1)
    with pytest.raises(ValueError, match="no teacher for modality b"):
        bound(tmp_path, teachers=[a])
    with pytest.raises(ValueError, match="two teachers of modality a"):
        bound(tmp_path, teachers=[a, saved(tmp_path, {"a": [4]}, seed=2)[0]])
    both, _ = saved(tmp_path, SHAPES, seed=3)
    with pytest.raises(ValueError, match="has modalities a, b; each teacher is a uni-modal model"):
        bound(tmp_path, teachers=[both])
    wide = [saved(tmp_path, {m: s}, seed=4, dim=7)[0] for m, s in SHAPES.items()]
    method, student = bound(tmp_path, teachers=wide)
    x, labels = batch()
    with pytest.raises(ValueError, match=r"embeddings of shape \(7,\), the model \(6,\)"):
        method.loss(student(method.prepare_inputs(x)), labels)


WORKFLOW = """
name: umt
steps:
  data: {component: data.synthetic}
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
  teacher:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {method: {name: unimodal, modality: audio}}
  student:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"%s}
    params: {method: {name: %s}}
"""


@pytest.mark.parametrize(("teachers", "name", "problem"), [
    ("", "umt", ":14: steps.student.params.method: method umt learns from a uni-modal model per modality: wire "
                "inputs.teachers to train.classifier steps with method unimodal"),
    (', teachers: ["${steps.teacher.outputs.model}"]', "naive",
     ":13: steps.student.inputs.teachers: method naive takes no teachers"),
])
def test_validation_wires_teachers_to_umt_only(write_workflow, teachers, name, problem):
    from mmflow.engine import WorkflowError, load_workflow

    path = write_workflow(WORKFLOW % (teachers, name))
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert [str(p) for p in info.value.problems] == [f"{path}{problem}"]
    load_workflow(write_workflow(WORKFLOW % (', teachers: ["${steps.teacher.outputs.model}"]', "umt")))
