"""PMR's cost: epoch time of PMR / naive training, and prototype logits by Python loop / torch.cdist.

1. The same CNN model, CG-MNIST shards, batch size and seed, trained with `method: naive` and
   `method: pmr` (proto_fraction 0.1) in this process, their epochs interleaved one by one (so the
   machine's drift hits both alike); diagnostics off so only the method's own work is timed. The
   ratio is the median over epochs after the first of PMR's epoch time over naive's next to it. A third
   training, PMR reading its prototype batches from the shards every epoch (as before they were kept
   from the epoch before), shows what keeping them saves.
2. Prototype logits for a batch: the official code's per-sample, per-class Python loop of
   sqrt(dot(x - c, x - c)) versus one `torch.cdist` call, on the same tensors.

    python benchmarks/pmr_overhead.py [--epochs 10]
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
from mmflow.components.tasks import class_sums
from mmflow.components.tasks.training_loop import Training
from mmflow.components.tasks.training_params import TrainClassifierParams
from mmflow.engine import Resources
from mmflow.engine.inline_executor import InlineSession

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


def trainings(shards: Path, storage: Path, epochs: int) -> dict[str, Training]:
    """naive, PMR, and PMR reading its prototype batches every epoch, each in a session of its own."""
    found = {}
    for name, method in (("naive", {"name": "naive"}), ("pmr", {"name": "pmr", "alpha": 1, "proto_fraction": 0.1}),
                         ("pmr_reading", {"name": "pmr", "alpha": 1, "proto_fraction": 0.1})):
        params = TrainClassifierParams.model_validate({
            "epochs": epochs, "batch_size": 64, "encoder": "cnn", "embedding_dim": 512, "optimizer": "sgd",
            "lr": 0.01, "method": method, "diagnostics": False})
        session = InlineSession(storage / name, 0, Resources(), lambda _: None)
        found[name] = Training(session, {"params": params.model_dump(), "train": str(shards)})
    return found


def epoch_seconds(run: Training, epoch: int, keep: bool) -> float:
    """One epoch of `run`; without `keep`, its prototype batches are read again before the next."""
    saved = class_sums.KEPT_BYTES
    class_sums.KEPT_BYTES = saved if keep else 0
    try:
        return run.run_epoch(epoch)["epoch_seconds"]
    finally:
        class_sums.KEPT_BYTES = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
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
        runs = trainings(tmp / "shards", tmp / "runs", args.epochs)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for epoch in range(args.epochs):
            for name, run in runs.items():
                seconds[name].append(epoch_seconds(run, epoch, keep=name != "pmr_reading"))
            shown = ", ".join(f"{name} {s[-1]:.2f} s" for name, s in seconds.items())
            print(f"epoch {epoch + 1}: {shown}", flush=True)
    for name in ("pmr", "pmr_reading"):  # after the first epoch, where both read
        ratios = [p / n for p, n in zip(seconds[name][1:], seconds["naive"][1:], strict=True)]
        results[f"{name}_over_naive"] = statistics.median(ratios)
    results.update({f"{name}_epoch_seconds": statistics.median(s[1:]) for name, s in seconds.items()})
    print(f"epoch time pmr / naive: {results['pmr_over_naive']:.3f} (target <= 1.05); reading its prototype "
          f"batches every epoch: {results['pmr_reading_over_naive']:.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
