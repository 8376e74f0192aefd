"""Cost of online G-Blend over naive training, with training waiting for each estimate's probes (the paper's
order) and with later estimates' probes beside the training (overlap_probes, the default), in one run.

Data and settings are those of workflows/gblend_online.yaml (synthetic, k = 2 modalities, one
overfitting; 30 epochs; G-Blend re-estimates at epochs 0, 10, 15, 20, 25 with 3 probes each).
Every configuration runs through `train.classifier`'s worker function on one Ray Train worker
(1 CPU); the local Ray is started per configuration with room for `--probe-slots` probe tasks
(1 CPU each) beside it, by default as many as the workflow's local Ray has here (this machine's
cores less the worker's). Training time is the sum of the epochs' wall times (probes included,
Ray start-up excluded); test accuracy comes from `eval.classifier`'s evaluation.

    python benchmarks/gblend_cost.py [--rounds 1] [--epochs 30] [--probe-slots N] [--probe-epochs N]
                                     [--probe-fraction F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray

from mmflow.components.data.datasets import generate_synthetic, iter_samples, save_tensor_dataset
from mmflow.components.data.shards import write_shards
from mmflow.components.tasks.classifier_eval import evaluate
from mmflow.components.tasks.training_loop import train_worker
from mmflow.engine import Resources, TrainingJob, load_workflow
from mmflow.engine.ray_executor import RAY_ENV, RayExecutor

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "gblend_online.yaml"


def train(shards: Path, params: dict, storage: Path, probe_slots: int, seed: int) -> dict:
    """Train on a fresh local Ray with room for `probe_slots` probe tasks at once; timings and accuracy."""
    resources = Resources(workers=1, cpus_per_worker=1, cpus_per_task=1)
    ray.init(address="local", num_cpus=1 + probe_slots, logging_level="WARNING",
             runtime_env={"env_vars": RAY_ENV})  # the executor sees it and leaves it
    try:
        started = time.perf_counter()
        result = RayExecutor().train(train_worker, {"params": params, "train": str(shards / "train")},
                                     TrainingJob(resources, storage, seed=seed, log=lambda _: None, parallel_tasks=3))
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    accuracy = evaluate(result.checkpoint, shards / "train", shards / "test", 512)["accuracy"]
    return {"train_seconds": sum(h["epoch_seconds"] for h in result.history), "wall_seconds": wall,
            "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--probe-slots", type=int, default=max(1, (os.cpu_count() or 1) - 1),
                        help="probe tasks that run at once beside the worker (default: this machine's cores - 1)")
    parser.add_argument("--probe-epochs", type=int, help="override the workflow's probe_epochs")
    parser.add_argument("--probe-fraction", type=float, help="override the workflow's probe_fraction")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "gblend_cost.json")
    args = parser.parse_args()

    overrides = [f"steps.naive.params.epochs={args.epochs}", f"steps.gblend.params.epochs={args.epochs}"]
    if args.probe_epochs is not None:
        overrides.append(f"steps.gblend.params.method.probe_epochs={args.probe_epochs}")
    if args.probe_fraction is not None:
        overrides.append(f"steps.gblend.params.method.probe_fraction={args.probe_fraction}")
    workflow = load_workflow(WORKFLOW, overrides)
    data = workflow.steps["data"].params
    gblend = workflow.steps["gblend"].params
    waiting = gblend.model_dump()
    waiting["method"]["overlap_probes"] = False  # the paper's order
    configs = {"naive": workflow.steps["naive"].params.model_dump(), "gblend_waiting": waiting,
               "gblend_overlapped": gblend.model_dump()}
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        save_tensor_dataset(tmp / "ds", generate_synthetic(data, seed=workflow.spec.seed), data.num_classes)
        for split in ("train", "test"):
            write_shards(iter_samples(tmp / "ds", split), tmp / "shards" / split, 250, data.num_classes)
        for round_ in range(args.rounds):  # interleaved, so drift hits every configuration alike
            for name, params in configs.items():
                runs[name].append(train(tmp / "shards", params, tmp / f"{name}{round_}", args.probe_slots,
                                        seed=round_))
                print(f"round {round_ + 1} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[name][-1].items()),
                      flush=True)
    summary = {name: {key: statistics.median(r[key] for r in found) for key in found[0]} for name, found in runs.items()}
    naive, waiting, overlapped = (summary[n]["train_seconds"] for n in configs)
    method = gblend.method
    results = {"epochs": args.epochs, "rounds": args.rounds, "probe_slots": args.probe_slots, "summary": summary,
               "runs": runs, "probe_settings": {k: getattr(method, k) for k in ("probe_epochs", "probe_fraction",
                                                                               "holdout", "warmup_super_epoch",
                                                                               "super_epoch")},
               "online_over_naive": overlapped / naive, "waiting_over_naive": waiting / naive}
    print(f"\nnaive training               {naive:.1f} s, test accuracy {summary['naive']['accuracy']:.3f}")
    for name, seconds in (("gblend_waiting", waiting), ("gblend_overlapped", overlapped)):
        print(f"online G-Blend, {name[7:]:10} {seconds:.1f} s, test accuracy {summary[name]['accuracy']:.3f}")
    print(f"online / naive (overlapped) {results['online_over_naive']:.2f}  (target <= 1.25)")
    print(f"online / naive (waiting)    {results['waiting_over_naive']:.2f}")
    print(f"probe slots: {args.probe_slots}; probe settings: {results['probe_settings']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
