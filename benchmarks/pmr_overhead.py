"""PMR's cost: epoch time of PMR / naive training, and prototype logits by Python loop / torch.cdist.

1. The same CNN model, CG-MNIST shards, batch size and seed, trained with `method: naive` and
   `method: pmr` (proto_fraction 0.1) by the inline executor, interleaved; diagnostics off so
   only the method's own work is timed. Median epoch time after the first epoch.
2. Prototype logits for a batch: the official code's per-sample, per-class Python loop of
   sqrt(dot(x - c, x - c)) versus one `torch.cdist` call, on the same tensors.

    python benchmarks/pmr_overhead.py [--rounds 2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmflow.components.balance.prototypes import prototype_logits
from mmflow.components.data.cg_mnist import CGMNISTParams
from mmflow.components.data.colored_digits import build_cg_mnist
from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
from mmflow.components.data.shards import write_shards
from mmflow.components.tasks.training_params import TrainClassifierParams
from mmflow.components.tasks.training_loop import train_worker
from mmflow.engine import InlineExecutor, Resources, TrainingJob

REPO = Path(__file__).resolve().parents[1]


def official_loop_distances(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The official PMR code's EU_dist: a Python loop over samples and classes."""
    d = torch.zeros(x.shape[0], c.shape[0])
    for i in range(x.shape[0]):
        for j in range(c.shape[0]):
            diff = x[i] - c[j]
            d[i, j] = torch.sqrt(torch.dot(diff, diff))
    return -d


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def epoch_seconds(shards: Path, method: dict, epochs: int, storage: Path) -> float:
    params = TrainClassifierParams.model_validate({
        "epochs": epochs, "batch_size": 64, "encoder": "cnn", "embedding_dim": 512, "optimizer": "sgd",
        "lr": 0.01, "method": method, "diagnostics": False})
    result = InlineExecutor().train(train_worker, {"params": params.model_dump(), "train": str(shards)},
                                    TrainingJob(Resources(), storage, log=lambda _: None))
    return statistics.median(h["epoch_seconds"] for h in result.history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "pmr_overhead.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    x, c = torch.randn(64, 512), torch.randn(10, 512)
    torch.testing.assert_close(official_loop_distances(x, c), prototype_logits(x, c), rtol=1e-4, atol=1e-4)
    loop_s = best_of(lambda: official_loop_distances(x, c), 5)
    cdist_s = best_of(lambda: prototype_logits(x, c), 200)
    results: dict[str, float] = {"loop_seconds": loop_s, "cdist_seconds": cdist_s, "loop_over_cdist": loop_s / cdist_s}
    print(f"prototype logits, batch 64 x 10 classes x 512-d: loop {loop_s * 1e3:.2f} ms, "
          f"cdist {cdist_s * 1e6:.1f} us -> {loop_s / cdist_s:.0f}x (target >= 100x)", flush=True)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        save_tensor_dataset(tmp / "ds", build_cg_mnist(CGMNISTParams(), seed=0), num_classes=10)
        write_shards(iter_samples(tmp / "ds", "train"), tmp / "shards", 500, num_classes=10)
        naive, pmr = [], []
        for round_ in range(args.rounds):
            naive.append(epoch_seconds(tmp / "shards", {"name": "naive"}, args.epochs, tmp / f"n{round_}"))
            pmr.append(epoch_seconds(tmp / "shards", {"name": "pmr", "alpha": 1, "proto_fraction": 0.1},
                                     args.epochs, tmp / f"p{round_}"))
            print(f"round {round_ + 1}: naive {naive[-1]:.2f} s/epoch, pmr {pmr[-1]:.2f} s/epoch", flush=True)
    results.update(naive_epoch_seconds=statistics.median(naive), pmr_epoch_seconds=statistics.median(pmr))
    results["pmr_over_naive"] = results["pmr_epoch_seconds"] / results["naive_epoch_seconds"]
    print(f"epoch time pmr / naive: {results['pmr_over_naive']:.3f} (target <= 1.10)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
