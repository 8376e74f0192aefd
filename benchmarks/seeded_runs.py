"""What the accuracy benchmarks share: run a workflow once per seed, read a step's metrics, mean ± std."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path


def run_workflow(workflow: Path, seed: int, overrides: list[str], ray: bool, runs_root: Path, tag: str) -> Path:
    """Run the workflow for one seed; the run directory (steps shared with earlier runs come from the cache)."""
    run_dir = runs_root / workflow.stem / f"seed{seed}-{tag}"  # where the step cache looks: <root>/<workflow>/<run>
    cmd = [sys.executable, "-m", "mmflow.engine.cli", "run", str(workflow), "--run-dir", str(run_dir),
           "--runs-root", str(runs_root), "--set", f"seed={seed}"]
    if not ray:
        cmd += ["--set", "executor=inline"]
    for expression in overrides:
        cmd += ["--set", expression]
    subprocess.run(cmd, check=True)
    return run_dir


def metrics_of(run_dir: Path, step: str) -> dict:
    """The metrics a step of a finished run wrote."""
    return json.loads((run_dir / step / "metrics.json").read_text())


def mean_std(per_seed: dict[int, dict[str, dict]], metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """method -> metric and metric_std: mean and sample std over the seeds that report the metric."""
    table: dict[str, dict[str, float]] = {}
    for method in next(iter(per_seed.values())):
        for metric in metrics:
            values = [runs[method][metric] for runs in per_seed.values() if metric in runs[method]]
            if values:
                table.setdefault(method, {})[metric] = statistics.mean(values)
                table[method][f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return table
