"""Sweep overhead and data-parallel scaling on this machine.

1. A tiny sweep (4 learning rates, FIFO, 2 trials at a time, each a 1-worker Ray Train run of
   the classifier plus its evaluation) with `mmflow sweep`, against the same 4 trainings run
   one by one with `mmflow run --set ...lr=X` (data and shards cached after the first, as in
   the sweep): wall time per trial, Ray start-up included in both.
2. Ray Train throughput of one training (the CG-MNIST CNN, 4,900 digit pairs, batch 256 per
   worker, 12 epochs) with 2 workers (1 CPU each, gloo all-reduce) vs 1 worker: samples/s, median
   over the epochs after the first (the first few epochs of a run share the cores with Ray's
   actors still starting); `--rounds` interleaved pairs (1 then 2 workers), each round's ratio
   and the median ratio (target >= 1.7x on 2 cores).
3. What the machine allows: the same two CNN encoders and head trained by plain torch DDP (gloo,
   1 thread per process, random tensors in memory, no Ray, no data reading), 2 processes vs 1.

    python benchmarks/sweep_overhead.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
LRS = [0.2, 0.05, 0.01, 0.002]

TINY = """
name: tiny
resources: {workers: 1, cpus_per_worker: 1}
steps:
  data: {component: data.synthetic, params: {train_size: 2000, test_size: 500}}
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
    params: {samples_per_shard: 250}
  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 5, diagnostics: false}
  eval:
    component: eval.classifier
    inputs: {model: "${steps.train.outputs.model}", train: "${steps.shard.outputs.train}",
             test: "${steps.shard.outputs.test}"}
"""
SWEEP = f"""
sweep:
  parameters:
    steps.train.params.lr: {{grid: {LRS}}}
  metric: eval.accuracy
  max_concurrent_trials: 2
"""
# convolutions: much compute per parameter, so the gradient all-reduce is a small share of a step
SCALING = """
name: scaling
resources: {workers: 1, cpus_per_worker: 1}
steps:
  data: {component: data.cg_mnist, params: {test_size: 100}}
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
    params: {samples_per_shard: 245}
  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {epochs: 12, batch_size: 256, encoder: cnn, embedding_dim: 512, diagnostics: false}
"""


def mmflow(*args: str, cwd: Path) -> float:
    """Seconds `mmflow ARGS` took (it must succeed)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mmflow.engine.cli", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - started


def samples_per_s(run: Path) -> float:
    history = json.loads((run / "train" / "metrics.json").read_text())["history"]
    return statistics.median(h["samples_per_s"] for h in history[1:])


def ddp_samples_per_s(rank: int, world: int, steps: int, port: int, out: dict) -> None:
    """One process of plain torch DDP on the CG-MNIST classifier's shapes; rank 0 records samples/s."""
    from mmflow.components.models.build import build_encoder

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)

    class Concat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gray = build_encoder("cnn", [1, 28, 28], [], 512)
            self.color = build_encoder("cnn", [3, 28, 28], [], 512)
            self.head = torch.nn.Linear(1024, 10)

        def forward(self, gray: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.gray(gray), self.color(color)], dim=1))

    ddp = torch.nn.parallel.DistributedDataParallel(Concat())
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    gray, color, labels = torch.randn(256, 1, 28, 28), torch.randn(256, 3, 28, 28), torch.randint(0, 10, (256,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(ddp(gray, color), labels).backward()
        optimizer.step()

    for _ in range(3):
        step()
    dist.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    if rank == 0:
        out["samples_per_s"] = world * steps * 256 / (time.perf_counter() - started)
    dist.destroy_process_group()


def plain_ddp(world: int, steps: int = 40) -> float:
    """Samples/s of `world` DDP processes without Ray."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(ddp_samples_per_s, args=(world, steps, 29400 + world, out), nprocs=world,
                           start_method="spawn")
        return out["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "sweep_overhead.json")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved 1-worker / 2-worker pairs")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "tiny.yaml").write_text(TINY)
        (tmp / "sweep.yaml").write_text(TINY + SWEEP)
        sweep_seconds = mmflow("sweep", "sweep.yaml", "--runs-root", "sweep-runs", cwd=tmp)
        one_by_one = sum(mmflow("run", "tiny.yaml", "--runs-root", "runs", "--set", f"steps.train.params.lr={lr}",
                                cwd=tmp) for lr in LRS)
        results.update(sweep_seconds_per_trial=sweep_seconds / len(LRS), run_seconds_per_training=one_by_one / len(LRS))
        print(f"tiny sweep: {results['sweep_seconds_per_trial']:.1f} s per trial ({len(LRS)} trials, 2 at a time); "
              f"one by one with mmflow run: {results['run_seconds_per_training']:.1f} s per training", flush=True)

        (tmp / "scaling.yaml").write_text(SCALING)
        rounds = []
        for round_ in range(args.rounds):
            speed = {}
            for workers in (1, 2):
                run = tmp / f"scale{workers}-{round_}"
                mmflow("run", "scaling.yaml", "--runs-root", "scale-runs", "--run-dir", str(run),
                       "--set", f"resources.workers={workers}", cwd=tmp)
                speed[workers] = samples_per_s(run)
            rounds.append({"workers_1_samples_per_s": speed[1], "workers_2_samples_per_s": speed[2],
                           "two_over_one": speed[2] / speed[1]})
            print(f"Ray Train round {round_ + 1}: 1 worker {speed[1]:.0f}, 2 workers {speed[2]:.0f} samples/s: "
                  f"{speed[2] / speed[1]:.2f}x", flush=True)
    results["scaling_rounds"] = rounds
    results["two_over_one_worker"] = statistics.median(r["two_over_one"] for r in rounds)
    print(f"2 workers / 1 worker, median of {len(rounds)} rounds: {results['two_over_one_worker']:.2f}x "
          f"(target >= 1.7)", flush=True)
    for world in (1, 2):
        results[f"plain_ddp_{world}_samples_per_s"] = plain_ddp(world)
    results["plain_ddp_two_over_one"] = results["plain_ddp_2_samples_per_s"] / results["plain_ddp_1_samples_per_s"]
    print(f"plain torch DDP, no Ray: 1 process {results['plain_ddp_1_samples_per_s']:.0f}, 2 processes "
          f"{results['plain_ddp_2_samples_per_s']:.0f} samples/s: {results['plain_ddp_two_over_one']:.2f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
