"""Engine overhead: a plain PyTorch loop vs. mmflow's inline executor, interleaved in one run.

Both train the same model on the same webdataset shards with the same reader, batch size,
optimizer and seed; mmflow adds what the engine does per epoch (metric reduction, report,
checkpoint), with its default per-epoch diagnostics and without them. Also times `mmflow validate` and a cold
quickstart run: to its first epoch line and to its end.

    python benchmarks/engine_overhead.py [--rounds 3] [--epochs 3] [--skip-quickstart]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmflow.components.data.datasets import generate_synthetic, iter_samples, save_tensor_dataset
from mmflow.components.data.shards import ShardReader, write_shards
from mmflow.components.data.synthetic import SyntheticParams
from mmflow.components.models.build import build_classifier
from mmflow.components.tasks.training_params import TrainClassifierParams
from mmflow.components.tasks.training_loop import train_worker
from mmflow.components.tasks.optim import make_optimizer
from mmflow.engine import InlineExecutor, Resources, TrainingJob

REPO = Path(__file__).resolve().parents[1]


def plain_loop(shards: Path, params: TrainClassifierParams, seed: int) -> float:
    """What a user would write by hand: same reader, model, optimizer; returns samples/s, timed from the start as
    mmflow's is (set-up included)."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    reader = ShardReader(shards, seed=seed, shuffle_buffer=params.shuffle_buffer)
    manifest = reader.manifest
    model = build_classifier(params.architecture(manifest, reader.modalities))
    optimizer = make_optimizer(params, model.parameters())
    samples = 0
    for epoch in range(params.epochs):
        model.train()
        loss_sum = correct = 0.0
        for features, labels in reader.batches(epoch, params.batch_size):
            out = model(features)
            loss = F.cross_entropy(out.logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * labels.numel()
            correct += (out.logits.argmax(1) == labels).sum().item()
            samples += labels.numel()
    return samples / (time.perf_counter() - started)


def mmflow_inline(shards: Path, params: TrainClassifierParams, seed: int, storage: Path) -> float:
    """train.classifier's worker function through the inline executor; returns samples/s."""
    started = time.perf_counter()
    result = InlineExecutor().train(train_worker, {"params": params.model_dump(), "train": str(shards)},
                                    TrainingJob(Resources(), storage, seed=seed, log=lambda _: None))
    seconds = time.perf_counter() - started
    samples = sum(round(h["samples_per_s"] * h["epoch_seconds"]) for h in result.history)  # per-epoch counts
    return samples / seconds


def wall(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def first_epoch_and_wall(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Seconds from starting `mmflow run` to its first epoch line, and to its end (the run's lines are on stderr)."""
    started = time.perf_counter()
    first = None
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        for line in process.stderr:
            if first is None and re.match(r"\s*epoch 1/", line):
                first = time.perf_counter() - started
    if process.returncode != 0 or first is None:
        raise RuntimeError(f"{' '.join(cmd)} failed or printed no epoch line")
    return first, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--skip-quickstart", action="store_true")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "engine_overhead.json")
    args = parser.parse_args()

    params = TrainClassifierParams(epochs=args.epochs, batch_size=64)
    results: dict[str, object] = {"torch_threads": torch.get_num_threads(), "epochs": args.epochs,
                                  "train_size": args.train_size, "batch_size": params.batch_size}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        splits = generate_synthetic(SyntheticParams(train_size=args.train_size, test_size=10), seed=0)
        save_tensor_dataset(tmp / "ds", splits, num_classes=6)
        write_shards(iter_samples(tmp / "ds", "train"), tmp / "shards", 500, num_classes=6)

        plain, engine, bare = [], [], []
        no_diagnostics = params.model_copy(update={"diagnostics": False})
        for round_ in range(args.rounds):  # interleaved, so drift hits all alike
            plain.append(plain_loop(tmp / "shards", params, seed=round_))
            engine.append(mmflow_inline(tmp / "shards", params, seed=round_, storage=tmp / f"store{round_}"))
            bare.append(mmflow_inline(tmp / "shards", no_diagnostics, seed=round_, storage=tmp / f"bare{round_}"))
            print(f"round {round_ + 1}: plain {plain[-1]:.0f} samples/s, mmflow inline {engine[-1]:.0f} samples/s, "
                  f"without diagnostics {bare[-1]:.0f} samples/s", flush=True)
        results["plain_samples_per_s"] = statistics.median(plain)
        results["mmflow_inline_samples_per_s"] = statistics.median(engine)
        results["ratio"] = results["mmflow_inline_samples_per_s"] / results["plain_samples_per_s"]
        results["no_diagnostics_samples_per_s"] = statistics.median(bare)
        results["ratio_no_diagnostics"] = results["no_diagnostics_samples_per_s"] / results["plain_samples_per_s"]

        mmflow = [sys.executable, "-m", "mmflow.engine.cli"]
        workflow = str(REPO / "workflows" / "quickstart.yaml")
        results["validate_seconds"] = statistics.median(wall([*mmflow, "validate", workflow], tmp) for _ in range(5))
        if not args.skip_quickstart:
            results["first_epoch_seconds"], results["quickstart_seconds"] = first_epoch_and_wall(
                [*mmflow, "run", workflow, "--runs-root", str(tmp / "runs")], tmp)

    print(f"plain PyTorch loop      {results['plain_samples_per_s']:.0f} samples/s (median of {args.rounds})")
    print(f"mmflow inline executor  {results['mmflow_inline_samples_per_s']:.0f} samples/s")
    print(f"ratio                   {results['ratio']:.3f}  (target >= 0.97, diagnostics on: the default)")
    print(f"ratio, diagnostics off  {results['ratio_no_diagnostics']:.3f}")
    print(f"mmflow validate         {results['validate_seconds']:.3f} s (median of 5, target < 0.5 s)")
    if "quickstart_seconds" in results:
        print(f"quickstart (Ray, 2 workers, cold) {results['quickstart_seconds']:.1f} s, first epoch line after "
              f"{results['first_epoch_seconds']:.1f} s (targets <= 20 s, <= 10 s)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
