"""`report.compare` tabulates the same metrics across evaluation steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmflow.components.report.compare import CompareParams, compare
from mmflow.engine import REGISTRY, StepContext, UsageError


def test_compare_builds_a_row_per_step(tmp_path):
    paths = []
    for step, acc in (("eval_naive", 0.25), ("eval_pmr", 0.5)):
        path = tmp_path / step
        path.write_text(json.dumps({"accuracy": acc, "accuracy_gray_head": acc / 2, "chance": 0.1}))
        paths.append(path)
    ctx = StepContext.standalone(REGISTRY.get("report.compare"), {"results": paths}, tmp_path / "out",
                                 sources={"results": ["eval_naive", "eval_pmr"]})
    metrics = compare(ctx, CompareParams(metrics=["accuracy", "accuracy_*_head"]))
    table = Path(tmp_path / "out" / "table").read_text().splitlines()
    assert table[0] == "| step | accuracy | accuracy_gray_head |"
    assert table[3] == "| eval_pmr | 0.5000 | 0.2500 |"
    assert metrics == {"eval_naive.accuracy": 0.25, "eval_naive.accuracy_gray_head": 0.125,
                       "eval_pmr.accuracy": 0.5, "eval_pmr.accuracy_gray_head": 0.25}


def noise_curve(*accuracies: float) -> dict:
    return {"x": "noise level", "points": [[i / (len(accuracies) - 1), a] for i, a in enumerate(accuracies)]}


def test_effective_robustness_is_against_the_reference_steps_curve_of_the_same_seed(tmp_path):
    rows = {"eval_naive@0": {"accuracy_under_noise/gray": noise_curve(0.8, 0.6, 0.4)},
            "eval_naive@1": {"accuracy_under_noise/gray": noise_curve(0.7, 0.7, 0.7)},
            "eval_pmr@0": {"accuracy_under_noise/gray": noise_curve(0.9, 0.8, 0.7),
                           "accuracy_under_noise/color": noise_curve(0.9, 0.1, 0.1)},  # the reference has none
            "eval_pmr@1": {"accuracy_under_noise/gray": noise_curve(0.9, 0.8, 0.7)},
            "eval_coarse@0": {"accuracy_under_noise/gray": noise_curve(0.9, 0.1)}}  # other levels: not compared
    paths = []
    for step, row in rows.items():
        paths.append(tmp_path / step)
        paths[-1].write_text(json.dumps({"accuracy": row["accuracy_under_noise/gray"]["points"][0][1], **row}))
    ctx = StepContext.standalone(REGISTRY.get("report.compare"), {"results": paths}, tmp_path / "out",
                                 sources={"results": list(rows)})
    metrics = compare(ctx, CompareParams(metrics=["effective_robustness_*"], robustness_reference="eval_naive"))
    # seed 0: naive moved up by 0.1 is [0.9, 0.7, 0.5], pmr above it by 0, 0.1, 0.2 (0.3); seed 1: [0.9, 0.9, 0.9], -0.3
    assert metrics["eval_pmr.effective_robustness_gray"] == pytest.approx((0.3 - 0.3) / 2)
    assert metrics["eval_pmr.effective_robustness_gray_std"] == pytest.approx(0.3 * 2 ** 0.5)  # of 0.3 and -0.3
    assert metrics["eval_naive.effective_robustness_gray"] == 0  # the reference against itself
    assert "eval_pmr.effective_robustness_color" not in metrics  # the reference has no such curve
    assert "eval_coarse.effective_robustness_gray" not in metrics
    with pytest.raises(UsageError, match="robustness_reference 'eval_late' is not one of its results' steps "
                                         r"\(eval_naive, eval_pmr, eval_coarse\)"):
        compare(ctx, CompareParams(metrics=["effective_robustness_*"], robustness_reference="eval_late"))
