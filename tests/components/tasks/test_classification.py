"""The classifier: concat fusion splits into per-modality logits, and inline training learns."""

from __future__ import annotations

import json

import pytest
import torch

from mmflow.components.models.build import build_classifier

from ...conftest import REPO


def test_concat_modality_logits_sum_to_fused_logits():
    model = build_classifier({"modalities": {"a": [5], "b": [3]}, "num_classes": 4, "hidden": [8],
                              "embedding_dim": 6, "fusion": "concat"})
    out = model({"a": torch.randn(7, 5), "b": torch.randn(7, 3)})
    assert out.logits.shape == (7, 4) and out.embeddings["a"].shape == (7, 6)
    torch.testing.assert_close(out.modality_logits["a"] + out.modality_logits["b"], out.logits)
    fc = model.fusion.fc
    torch.testing.assert_close(out.modality_logits["b"], out.embeddings["b"] @ fc.weight[:, 6:].T + fc.bias / 2)


def test_quickstart_inline_trains_above_chance(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = cli("run", REPO / "workflows" / "quickstart.yaml", "--set", "executor=inline",
                           "--set", "steps.train.params.epochs=3", "--run-dir", tmp_path / "run")
    assert status == 0, err
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["test_samples"] == 1000
    assert metrics["accuracy"] > 3 * metrics["chance"]
    # audio is the dominant modality in the quickstart data
    assert metrics["accuracy_audio_head"] > metrics["accuracy_visual_head"] > metrics["chance"]
    assert metrics["accuracy_audio_prototype"] > metrics["chance"]
    train = json.loads((tmp_path / "run" / "train" / "metrics.json").read_text())
    assert len(train["history"]) == 3 and train["history"][-1]["loss"] < train["history"][0]["loss"]
    assert {"model.pt", "architecture.json"} <= {p.name for p in (tmp_path / "run" / "train" / "outputs" / "model").iterdir()}


def test_gradient_clipping_bounds_the_update(tmp_path):
    from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
    from mmflow.components.data.shards import write_shards
    from mmflow.components.tasks.training_params import TrainClassifierParams
    from mmflow.components.tasks.training_loop import train_worker
    from mmflow.engine import InlineExecutor, Resources, TrainingJob

    labels = torch.arange(32) % 2
    save_tensor_dataset(tmp_path / "ds", {"train": {"label": labels, "a": torch.randn(32, 3) * 1e4}}, num_classes=2)
    write_shards(iter_samples(tmp_path / "ds", "train"), tmp_path / "shards", 32, num_classes=2)

    def first_step_change(clip):
        params = TrainClassifierParams(epochs=1, batch_size=32, optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0,
                                       hidden=[], embedding_dim=4, grad_clip_norm=clip, diagnostics=False)
        torch.manual_seed(0)
        config = {"params": params.model_dump(), "train": str(tmp_path / "shards")}
        result = InlineExecutor().train(train_worker, config,
                                        TrainingJob(Resources(), tmp_path / f"s{clip}", log=lambda _: None))
        after = torch.load(result.checkpoint / "model.pt", weights_only=True)
        from mmflow.components.models.build import build_classifier

        torch.manual_seed(0)
        before = build_classifier(json.loads((result.checkpoint / "architecture.json").read_text())).state_dict()
        return torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before)).item()

    assert first_step_change(0.5) == pytest.approx(0.5, rel=1e-3)  # lr 1, one step: the change is the clipped gradient
    assert first_step_change(None) > 10


def test_the_training_step_keeps_the_model_and_reports_its_last_epoch(tmp_path):
    from types import SimpleNamespace

    from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
    from mmflow.components.data.shards import write_shards
    from mmflow.components.tasks.classification import train_classifier
    from mmflow.components.tasks.training_params import TrainClassifierParams
    from mmflow.components.tasks.checkpoint import METHOD_STATE, TRAINING_STATE
    from mmflow.engine import PLACEMENT_FILE, TrainResult

    save_tensor_dataset(tmp_path / "ds", {"train": {"label": torch.arange(8) % 2, "a": torch.randn(8, 2),
                                                    "b": torch.randn(8, 3)}}, num_classes=2)
    write_shards(iter_samples(tmp_path / "ds", "train"), tmp_path / "shards", 8, num_classes=2)
    from mmflow.engine.executor import HISTORY_FILE

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "model.pt").write_text("weights")
    (checkpoint / "architecture.json").write_text("{}")
    (checkpoint / PLACEMENT_FILE).write_text("[]")  # where the ranks ran: kept with the model
    for training_state in (HISTORY_FILE, TRAINING_STATE, METHOD_STATE):  # what resuming needs, not a model
        (checkpoint / training_state).write_text("state")
    cost = {"train_samples": 100, "padded_samples": 0}
    history = [{"epoch": 0, "loss": 2.0, **cost, "epoch_seconds": 2.0, "peak_memory_mb": 300.0},
               {"epoch": 1, "loss": 1.0, "train_accuracy": 0.75, **cost, "epoch_seconds": 3.0, "peak_memory_mb": 250.0}]
    asked = []

    def train(fn, config, parallel_tasks):
        asked.append((config["problem"], parallel_tasks))
        return TrainResult(history, checkpoint)

    ctx = SimpleNamespace(inputs={"train": tmp_path / "shards"}, output=lambda name: tmp_path / "out" / name, seed=0,
                          train=train)
    metrics = train_classifier(ctx, TrainClassifierParams())
    assert metrics == {"loss": 1.0, "train_accuracy": 0.75, **cost, "epoch_seconds": 3.0, "peak_memory_mb": 250.0,
                       "epochs": 2, "history": history}
    assert sorted(p.name for p in (tmp_path / "out" / "model").iterdir()) == ["architecture.json", "model.pt",
                                                                             PLACEMENT_FILE]
    # beside the model, what training cost: 200 samples in 5 s, the larger epoch's peak
    assert json.loads((tmp_path / "out" / "cost").read_text()) == {
        "training_seconds": 5.0, "training_samples_per_s": 40.0, "training_peak_memory_mb": 300.0}
    assert (tmp_path / "out" / "model" / "model.pt").read_text() == "weights"
    online = TrainClassifierParams.model_validate({"method": {"name": "gblend", "mode": "online"}})
    (tmp_path / "out" / "model").rename(tmp_path / "first")
    train_classifier(ctx, online)
    assert asked == [("classification", 0), ("classification", 3)]  # online G-Blend: a probe per head at once


def test_a_zeroed_model_is_retrained_not_evaluated(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("run", REPO / "workflows" / "quickstart.yaml", "--set", "executor=inline",
            "--set", "steps.train.params.epochs=1")
    r1, r2 = (tmp_path / "runs" / "quickstart" / name for name in ("r1", "r2"))
    assert cli(*args, "--run-dir", r1)[0] == 0
    model = r1 / "train" / "outputs" / "model" / "model.pt"
    model.write_bytes(bytes(model.stat().st_size))
    status, out, err = cli(*args, "--run-dir", r2)
    assert status == 0, err
    assert "outputs/model changed after the step finished" in err
    # the model trained again is the same bytes (no timings in it), so the evaluation of it is reused
    assert [line.split()[:2] for line in out.splitlines()[1:5]] == [["data", "reused"], ["shard", "reused"],
                                                                     ["train", "ran"], ["eval", "reused"]]
    recorded = json.loads((r1 / "train" / "status.json").read_text())["outputs"]["model"]
    assert json.loads((r2 / "train" / "status.json").read_text())["outputs"]["model"] == recorded  # the cost: timings


def test_the_same_training_twice_gives_the_same_model_bytes(tmp_path):
    from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
    from mmflow.components.data.shards import write_shards
    from mmflow.components.tasks.training_params import TrainClassifierParams
    from mmflow.components.tasks.training_loop import train_worker
    from mmflow.engine import InlineExecutor, Resources, TrainingJob
    from mmflow.engine.run_folder import digest_path

    save_tensor_dataset(tmp_path / "ds", {"train": {"label": torch.arange(32) % 2, "a": torch.randn(32, 3)}},
                        num_classes=2)
    write_shards(iter_samples(tmp_path / "ds", "train"), tmp_path / "shards", 16, num_classes=2)
    config = {"params": TrainClassifierParams(epochs=2, batch_size=8, hidden=[4], embedding_dim=4).model_dump(),
              "train": str(tmp_path / "shards")}
    for attempt in ("one", "two"):
        result = InlineExecutor().train(train_worker, config,
                                        TrainingJob(Resources(), tmp_path / f"scratch_{attempt}", log=lambda _: None))
        result.save_checkpoint(tmp_path / attempt)
    assert digest_path(tmp_path / "one") == digest_path(tmp_path / "two")
