"""The classifier: concat fusion splits into per-modality logits, and inline training learns."""

from __future__ import annotations

import json

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
