"""`report.compare` tabulates the same metrics across evaluation steps."""

from __future__ import annotations

import json
from pathlib import Path

from mmflow.components.report.compare import CompareParams, compare
from mmflow.engine import REGISTRY, StepContext


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
