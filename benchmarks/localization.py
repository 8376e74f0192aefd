"""Event localization: training throughput, h5 read throughput, and PMR's effect on synthetic events.

1. Training throughput (segments/s) of concat and DMRN on AVE-shaped synthetic features (audio
   10 x 128, visual 10 x 7 x 7 x 512, 28 events + background; hidden 128, batch 64), the inline
   executor on this machine, median epoch after the first, diagnostics off.
2. h5 read throughput: AVE-format feature files (every name, key, shape and dtype of the public
   ones) read video by video by `data.ave_features`' reader.
3. Accuracy of concat vs concat+PMR and DMRN vs DMRN+PMR on the default synthetic events
   (workflows/ave_localization.yaml's settings), several seeds: per-segment test accuracy
   (background included), event-only accuracy and the visual (weak) modality's probe accuracy.

    python benchmarks/localization.py [--seeds 3] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' AVE feature-file writer

from mmflow.components.data.ave_features import AVEFeaturesParams, describe, iter_feature_samples  # noqa: E402
from mmflow.components.data.datasets import iter_samples, save_tensor_dataset  # noqa: E402
from mmflow.components.data.events import SyntheticEventsParams, generate_events  # noqa: E402
from mmflow.components.data.shards import write_shards  # noqa: E402
from mmflow.components.tasks.training_loop import train_worker  # noqa: E402
from mmflow.components.tasks.training_params import TrainLocalizationParams  # noqa: E402
from mmflow.components.tasks.localization_eval import evaluate_localization  # noqa: E402
from mmflow.engine import InlineExecutor, Resources, TrainingJob  # noqa: E402
from tests.components.data.test_events import write_ave_features  # noqa: E402

AVE_SHAPED = dict(num_classes=28, audio_dim=128, visual_grid=7, visual_dim=512)


def make_shards(root: Path, params: SyntheticEventsParams, seed: int) -> Path:
    """Synthetic events as train/test shards under root."""
    save_tensor_dataset(root / "ds", generate_events(params, seed), params.num_classes + 1,
                        background=params.num_classes)
    for split in ("train", "test"):
        write_shards(iter_samples(root / "ds", split), root / split, 128, params.num_classes + 1,
                     background=params.num_classes)
    return root


def train(shards: Path, settings: dict, storage: Path, seed: int = 0) -> list[dict]:
    params = TrainLocalizationParams.model_validate(settings)
    config = {"params": params.model_dump(), "train": str(shards / "train"), "problem": "localization"}
    job = TrainingJob(Resources(), storage, seed=seed, log=lambda _: None)
    return InlineExecutor().train(train_worker, config, job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "localization.json")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shaped = make_shards(tmp / "shaped", SyntheticEventsParams(**AVE_SHAPED, train_size=256, test_size=16), 0)
        for fusion in ("concat", "dmrn"):
            history = train(shaped, {"fusion": fusion, "epochs": 3, "diagnostics": False}, tmp / f"t-{fusion}").history
            seconds = statistics.median(h["epoch_seconds"] for h in history[1:])
            results[f"{fusion}_segments_per_s"] = 256 * 10 / seconds
            print(f"training {fusion}, AVE-shaped: {results[f'{fusion}_segments_per_s']:.0f} segments/s", flush=True)

        files = write_ave_features(tmp / "h5", videos=256)
        meta = describe(AVEFeaturesParams(root=str(files)))
        started = time.perf_counter()
        count = sum(1 for _ in iter_feature_samples(meta, "train"))
        seconds = time.perf_counter() - started
        results["h5_videos_per_s"] = count / seconds
        results["h5_mib_per_s"] = count * (10 * 7 * 7 * 512 + 10 * 128) * 4 / 2**20 / seconds
        print(f"h5 read: {results['h5_videos_per_s']:.0f} videos/s ({results['h5_mib_per_s']:.0f} MiB/s), "
              f"{count} videos of a {(files / 'visual_feature.h5').stat().st_size / 2**20:.0f} MiB visual file",
              flush=True)

        accuracy: dict[str, list[dict]] = {}
        for seed in range(args.seeds):
            shards = make_shards(tmp / f"events{seed}", SyntheticEventsParams(), seed)
            for fusion in ("concat", "dmrn"):
                for method in ({"name": "naive"}, {"name": "pmr", "alpha": 1.0}):
                    name = fusion + ("+pmr" if method["name"] == "pmr" else "")
                    storage = tmp / f"a-{seed}-{name}"
                    result = train(shards, {"fusion": fusion, "epochs": args.epochs, "method": method}, storage, seed)
                    metrics = evaluate_localization(result.checkpoint, shards / "train", shards / "test", 64, 300, seed)
                    accuracy.setdefault(name, []).append(metrics)
                    print(f"seed {seed} {name}: accuracy {metrics['accuracy']:.4f}, events "
                          f"{metrics['event_accuracy']:.4f}, visual probe {metrics['accuracy_visual_probe']:.4f}",
                          flush=True)
    for name, runs in accuracy.items():
        for key in ("accuracy", "event_accuracy", "accuracy_visual_probe", "accuracy_audio_probe"):
            values = [run[key] for run in runs]
            results[f"{name}_{key}_mean"] = statistics.mean(values)
            results[f"{name}_{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name}: accuracy {results[f'{name}_accuracy_mean'] * 100:.1f} ± "
              f"{results[f'{name}_accuracy_std'] * 100:.1f}, events {results[f'{name}_event_accuracy_mean'] * 100:.1f}, "
              f"visual probe {results[f'{name}_accuracy_visual_probe_mean'] * 100:.1f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
