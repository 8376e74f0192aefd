"""Event localization: segment accuracy, PMR on event segments only, the workflow end to end."""

from __future__ import annotations

import json

import torch

from mmflow.components.balance.base import LoopState
from mmflow.components.balance.config import PMRParams
from mmflow.components.balance.pmr import PMR, pmr_penalty
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
    method = PMR(PMRParams(alpha=1.0), ["audio", "visual"], 3)
    method.prototypes = prototypes
    state = LoopState(model=None, modalities=["audio", "visual"], num_classes=3, device=torch.device("cpu"),
                      epoch=0, background=2)
    logits = torch.randn(6, 3)
    loss, _ = method.loss(MultimodalOutput(logits, embeddings, {}), labels, state)
    events = labels != 2
    penalty, _ = pmr_penalty({m: z[events] for m, z in embeddings.items()}, labels[events], prototypes, alpha=1.0,
                             mu=0.0, coefficient="paper", regularize=False)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels) + penalty)
    moved = {m: z.clone() for m, z in embeddings.items()}
    moved["visual"][1] += 10  # a background segment's embedding: no effect on PCE
    moved_loss, _ = method.loss(MultimodalOutput(logits, moved, {}), labels, state)
    assert torch.allclose(moved_loss, loss)


def test_the_localization_workflow_runs_through_the_cli(cli, tmp_path):
    sets = ["executor=inline", "steps.data.params.train_size=64", "steps.data.params.test_size=16",
            "steps.shard.params.samples_per_shard=32"]
    for step in ("concat", "concat_pmr", "dmrn", "dmrn_pmr"):
        sets += [f"steps.{step}.params.epochs=2", f"steps.{step}.params.batch_size=16",
                 f"steps.{step}.params.hidden=8", f"steps.{step}.params.attention_dim=8"]
    args = [a for s in sets for a in ("--set", s)]
    status, out, err = cli("run", REPO / "workflows" / "ave_localization.yaml", "--run-dir", tmp_path / "run", *args)
    assert status == 0, out + err
    run = tmp_path / "run"
    table = (run / "compare" / "outputs" / "table").read_text()
    assert all(name in table for name in ("eval_concat", "eval_concat_pmr", "eval_dmrn", "eval_dmrn_pmr"))
    metrics = json.loads((run / "eval_dmrn_pmr" / "metrics.json").read_text())
    assert metrics["test_segments"] == 160 and len(metrics["confusion_matrix"]) == 6
    assert sum(map(sum, metrics["confusion_matrix"])) == 160
    assert {"accuracy_audio_probe", "accuracy_visual_probe", "event_accuracy", "class_accuracy/background"} <= set(metrics)
    history = json.loads((run / "concat_pmr" / "metrics.json").read_text())["history"]
    assert "pmr_rho" in history[-1] and len(history) == 2
