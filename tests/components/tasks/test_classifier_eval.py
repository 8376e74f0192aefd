"""eval.classifier's per-predictor scores against hand counts: accuracy, macro-F1, the confusion matrix."""

from __future__ import annotations

import pytest
import torch

from mmflow.components.tasks.classifier_eval import ClassificationScores, evaluate


def test_scores_count_rows_by_true_class_and_average_f1_over_the_classes_that_occur():
    scores = ClassificationScores(3)
    scores.update(torch.tensor([0, 1]), torch.tensor([0, 0]))  # two batches
    scores.update(torch.tensor([1, 1]), torch.tensor([1, 1]))
    result = scores.compute()
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert result["accuracy"] == 0.75
    # class 0: precision 1, recall 1/2, F1 2/3; class 1: precision 2/3, recall 1, F1 4/5; class 2 never occurs
    assert result["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_every_predictor_gets_accuracy_f1_and_a_confusion_matrix(evaluated):
    import re

    metrics = evaluate(evaluated / "model", evaluated / "train", evaluated / "test", batch_size=16)
    # names a tracking server takes (MLflow: alphanumerics, _ - . space : /)
    assert all(re.fullmatch(r"[\w\-. :/]+", name) for name in metrics), sorted(metrics)
    for suffix in ("", "_a_head", "_b_head", "_a_prototype", "_b_prototype", "_a_probe", "_b_probe"):
        matrix = torch.tensor(metrics[f"confusion_matrix{suffix}"])
        assert matrix.shape == (4, 4) and matrix.sum() == metrics["test_samples"] == 40
        assert matrix.sum(1).tolist() == [10, 10, 10, 10]  # rows: the true class
        assert metrics[f"accuracy{suffix}"] == matrix.trace().item() / 40
        assert 0 <= metrics[f"f1_macro{suffix}"] <= 1


def test_each_modalitys_probe_learns_from_its_frozen_train_embeddings(evaluated):
    from mmflow.components.data.shards import ShardReader
    from mmflow.components.models.build import load_classifier
    from mmflow.components.tasks.model_outputs import model_outputs
    from mmflow.components.tasks.probes import probe_predictions

    metrics = evaluate(evaluated / "model", evaluated / "train", evaluated / "test", batch_size=16, probe_steps=50,
                       seed=3)
    model, _ = load_classifier(evaluated / "model")
    with torch.no_grad():
        (_, train_z, train_y), (_, test_z, test_y) = (
            model_outputs(model, ShardReader(evaluated / split, shuffle=False, pad=False).batches(0, 16))
            for split in ("train", "test"))
    for m in "ab":
        predicted = probe_predictions(train_z[m], train_y, test_z[m], 4, steps=50, seed=3)
        assert metrics[f"accuracy_{m}_probe"] == pytest.approx((predicted == test_y).double().mean().item())
    without = evaluate(evaluated / "model", evaluated / "train", evaluated / "test", batch_size=16, probe_steps=0)
    assert not any(k.endswith("_probe") for k in without)
