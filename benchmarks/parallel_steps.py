"""Parallel steps: the four trainings of the CG-MNIST workflow one after another vs. side by side, in one run.

The data and shard steps run once; each mode then runs the four trainings (uni-modal gray, naive, OGM-GE, PMR;
1 Ray Train worker with 1 CPU each) with `--only` in a copy of that runs root, so both start from the same
cached shards: `--max-parallel-steps 1` (one after another) and the default (as many as the Ray has CPUs for).
Prints each mode's wall time (the whole `mmflow run`, Ray's start included), the speed-up, and whether the
four trainings' metrics are identical.

    python benchmarks/parallel_steps.py [--epochs N] [--rounds 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TRAININGS = ["uni_gray", "naive", "ogm_ge", "pmr"]


def mmflow_run(runs_root: Path, *args: str) -> float:
    """Seconds `mmflow run cg_mnist_pmr ARGS` takes, as a user starts it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmflow.engine.cli", "run", "cg_mnist_pmr", "--runs-root", str(runs_root),
                    "-q", *args], check=True, stdout=subprocess.DEVNULL, cwd=runs_root.parent)
    return time.perf_counter() - started


def without_timings(value: Any) -> Any:
    """`value` without the keys that hold timings (epoch_seconds, samples_per_s), at any depth."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "second" not in k and "per_s" not in k}
    return [without_timings(v) for v in value] if isinstance(value, list) else value


def trainings_metrics(runs_root: Path) -> dict[str, Any]:
    """The four trainings' metrics (each epoch's too) of the newest run in `runs_root`, without timings."""
    run = sorted(p for p in (runs_root / "cg_mnist_pmr").iterdir() if p.is_dir())[-1]
    return {step: without_timings(json.loads((run / step / "metrics.json").read_text())) for step in TRAININGS}


def main() -> None:
    """Run both modes `--rounds` times, interleaved, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs of each training (default: the workflow's 30)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the runs roots in this folder (default: a temporary one)")
    args = parser.parse_args()
    settings = ["--set", "resources.cpus_per_worker=1", "--only", ",".join(TRAININGS),
                *(f"--set=steps.{step}.params.epochs={args.epochs}" for step in TRAININGS if args.epochs)]
    times: dict[str, list[float]] = {"sequential": [], "parallel": []}
    metrics: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        mmflow_run(tmp / "shards", "--to", "shard")
        for round_ in range(args.rounds):
            for mode, extra in (("sequential", ["--max-parallel-steps", "1"]), ("parallel", [])):
                root = tmp / f"{mode}{round_}"
                shutil.copytree(tmp / "shards", root, symlinks=True)
                times[mode].append(mmflow_run(root, *settings, *extra))
                metrics[mode] = trainings_metrics(root)
            print(f"round {round_ + 1}: one after another {times['sequential'][-1]:.1f} s, side by side "
                  f"{times['parallel'][-1]:.1f} s", flush=True)
    sequential, parallel = statistics.median(times["sequential"]), statistics.median(times["parallel"])
    results = {"epochs": args.epochs or 30, "rounds": args.rounds, "sequential_s": sequential, "parallel_s": parallel,
               "speedup": sequential / parallel, "identical_metrics": metrics["sequential"] == metrics["parallel"],
               "metrics": metrics["parallel"]}
    print(f"four trainings, {results['epochs']} epochs each, 1 worker x 1 CPU")
    print(f"one after another   {sequential:.1f} s")
    print(f"side by side        {parallel:.1f} s")
    print(f"speed-up            {results['speedup']:.2f}x (target >= 1.6x)")
    print(f"identical metrics   {results['identical_metrics']}")
    out = Path(__file__).parent / "results" / "parallel_steps.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
