"""Media loading cost: decode + transform from shards vs what a training step consumes, and conversion.

A CREMA-D-layout tree of real-sized media (16 kHz WAVs of 2-3 s, 480 x 360 JPEG frames, as
CREMA-D ships them) is built in a temporary folder, then:
1. conversion: `write_media_shard` (one shard task) per core, raw and arrays, clips/s; and the
   whole set as parallel Ray tasks over this machine's cores;
2. loader: samples/s of `ShardReader` in training mode (decode, OGM-GE preset 257 x 188 STFT,
   1 frame, RandomResizedCrop(224) + flip, normalise) from raw and from array shards, one core;
3. consumption: samples/s of a training step (forward, backward, SGD step) of the CREMA-D model
   (ResNet-18 audio + visual, concat) on every core of this machine, from tensors in memory.
Ratio: loader samples/s per core / training samples/s (target >= 5).

    python benchmarks/loader_throughput.py [--clips 96] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test trees' writers

from mmflow.components.data.media_dataset import Clip  # noqa: E402
from mmflow.components.data.media_shards import media_modalities, write_media_shard  # noqa: E402
from mmflow.components.data.preprocess import AudioParams, VisualParams  # noqa: E402
from mmflow.components.data.shards import ShardReader, write_manifest  # noqa: E402
from mmflow.components.models.build import build_classifier  # noqa: E402
from mmflow.engine import Resources  # noqa: E402
from mmflow.engine.ray_executor import RayExecutor  # noqa: E402
from tests.components.data.media_trees import EMOTIONS, write_frames, write_wav  # noqa: E402

AUDIO, VISUAL = AudioParams(preset="ogm_ge"), VisualParams(num_frames=1, size=224, store_size=256)


def build_clips(root: Path, count: int) -> list[Clip]:
    """CREMA-D-sized media: 16 kHz WAVs of 2-3 s and 2-3 frames of 480 x 360 per clip."""
    clips = []
    for i in range(count):
        label = i % len(EMOTIONS)
        wav = write_wav(root / "AudioWAV" / f"c{i}.wav", label, 2 + (i % 3) / 2, rate=16000, seed=i)
        frames = write_frames(root / "Image-01-FPS" / f"c{i}", label, 2 + i % 2, size=(480, 360), seed=i)
        clips.append(Clip(f"c{i}", label, str(wav), [str(f) for f in frames]))
    return clips


def shard_jobs(clips: list[Clip], out: Path, store: str, per_shard: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    return [{"clips": [dataclasses.asdict(c) for c in clips[i:i + per_shard]], "store": store,
             "audio": AUDIO.settings(), "visual": VISUAL.model_dump(), "on_error": "fail",
             "num_classes": len(EMOTIONS), "path": str(out / f"shard-{i // per_shard:06d}.tar")}
            for i in range(0, len(clips), per_shard)]


def convert(clips: list[Clip], out: Path, store: str) -> float:
    """Clips/s of one conversion task on one core; writes the shards and their manifest."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    entries = [write_media_shard(job) for job in shard_jobs(clips, out, store, 16)]
    seconds = time.perf_counter() - started
    for entry in entries:
        entry.pop("skipped")
    write_manifest(out, entries, media_modalities(AUDIO.settings(), VISUAL), len(EMOTIONS), 16,
                   media={"store": store, "audio": AUDIO.settings(), "visual": VISUAL.model_dump()})
    return len(clips) / seconds


def loader_rate(shards: Path, workers: int = 0, epochs: int = 2) -> float:
    """Training-mode samples/s of the shard reader: in this process (one core) or `workers` processes."""
    torch.set_num_threads(1)
    reader = ShardReader(shards, augment=True, workers=workers)
    count, started = 0, time.perf_counter()
    for epoch in range(epochs):
        for features, _ in reader.batches(epoch, 16):
            count += features["audio"].shape[0]
    return count / (time.perf_counter() - started)


def training_rate(batch_size: int, steps: int = 4) -> float:
    """Samples/s of forward + backward + SGD step of the CREMA-D model on all cores."""
    torch.set_num_threads(os.cpu_count() or 1)
    shapes = media_modalities(AUDIO.settings(), VISUAL)
    model = build_classifier({"modalities": {m: s["shape"] for m, s in shapes.items()}, "num_classes": 6,
                              "encoder": "resnet18", "hidden": [], "embedding_dim": 512, "fusion": "concat"})
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batch = {m: torch.randn(batch_size, *s["shape"]) for m, s in shapes.items()}
    labels = torch.randint(6, (batch_size,))
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(batch).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return batch_size / min(times[1:])  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-ray", action="store_true", help="skip the parallel conversion on Ray")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "loader_throughput.json")
    args = parser.parse_args()
    results: dict[str, float] = {"cores": os.cpu_count() or 1}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clips = build_clips(tmp / "CREMA-D", args.clips)
        cores = int(results["cores"])
        for store in ("raw", "arrays"):
            # best of two: the first pass also pays for reading the media into the page cache
            converted = max(convert(clips, tmp / f"{store}-cold", store), convert(clips, tmp / store, store))
            size = sum(f.stat().st_size for f in (tmp / store).glob("*.tar")) / len(clips)
            single, parallel = loader_rate(tmp / store), loader_rate(tmp / store, workers=cores)
            results.update({f"convert_{store}_clips_per_s_per_core": converted, f"{store}_bytes_per_clip": size,
                            f"loader_{store}_samples_per_s_per_core": single,
                            f"loader_{store}_samples_per_s_{cores}_processes": parallel})
            print(f"{store}: convert {converted:.1f} clips/s per core, {size / 1024:.0f} KiB/clip; loader "
                  f"{single:.1f} samples/s on one core, {parallel:.1f} with {cores} loader processes", flush=True)
        if not args.skip_ray:
            jobs = shard_jobs(clips, tmp / "ray", "raw", 16)
            warm = shard_jobs(clips[: 16 * cores], tmp / "warm", "raw", 16)
            executor = RayExecutor()
            executor.run_tasks(write_media_shard, warm, Resources(), at_once=1)  # start workers
            started = time.perf_counter()
            executor.run_tasks(write_media_shard, jobs, Resources(), at_once=1)
            executor.close()
            results["convert_raw_clips_per_s_ray"] = len(clips) / (time.perf_counter() - started)
            print(f"raw conversion as parallel Ray tasks on {results['cores']} cores: "
                  f"{results['convert_raw_clips_per_s_ray']:.1f} clips/s", flush=True)
    results["train_samples_per_s"] = training_rate(args.batch_size)
    print(f"training step (ResNet-18 x 2, batch {args.batch_size}, {results['cores']} threads): "
          f"{results['train_samples_per_s']:.1f} samples/s")
    for store in ("raw", "arrays"):
        ratio = results[f"loader_{store}_samples_per_s_per_core"] / results["train_samples_per_s"]
        results[f"loader_{store}_over_training"] = ratio
        print(f"loader ({store}, one core) / training: {ratio:.1f}x (target >= 5)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
