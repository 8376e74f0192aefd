"""Webdataset tar shards: a writer with a manifest, and a rank-aware reader.

Every rank reads a disjoint set of shards, and all ranks yield the same number of samples per
epoch (DDP hangs otherwise). When the shards cannot be split evenly, `uneven="pad"` repeats a
rank's own samples up to the largest rank's count and `uneven="drop"` truncates to the smallest;
either way the plan reports how many samples were padded or dropped.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np
import torch
import webdataset as wds

from .datasets import Sample

MANIFEST = "manifest.json"
Uneven = Literal["pad", "drop"]


def write_shards(samples: Iterable[Sample], out: Path, samples_per_shard: int, num_classes: int) -> dict:
    """Write samples into `shard-NNNNNN.tar` files of `samples_per_shard` each, plus the manifest."""
    out.mkdir(parents=True)
    shards: list[dict] = []
    histogram = [0] * num_classes
    modalities: dict[str, dict] = {}
    writer, current = None, None
    for sample in samples:
        if writer is None:
            current = {"name": f"shard-{len(shards):06d}.tar", "count": 0, "keys": []}
            # A fixed mtime keeps float timestamps out of the headers: no PAX header per member
            # (half the tar parsing when reading) and byte-identical shards for identical data.
            writer = wds.TarWriter(str(out / current["name"]), mtime=0)
        record = {"__key__": sample.key, "cls": sample.label}
        for name, array in sample.features.items():
            record[f"{name}.npy"] = np.ascontiguousarray(array)
            modalities.setdefault(name, {"shape": list(array.shape), "dtype": str(array.dtype)})
        writer.write(record)
        current["count"] += 1
        current["keys"].append(sample.key)
        histogram[sample.label] += 1
        if current["count"] == samples_per_shard:
            writer.close()
            shards.append(current)
            writer = None
    if writer is not None:
        writer.close()
        shards.append(current)
    for shard in shards:
        shard["sha256"] = hashlib.sha256((out / shard["name"]).read_bytes()).hexdigest()
    manifest = {
        "format": "mmflow.shards/1",
        "modalities": modalities,
        "num_classes": num_classes,
        "num_samples": sum(s["count"] for s in shards),
        "samples_per_shard": samples_per_shard,
        "class_histogram": histogram,
        "shards": shards,
        "digest": hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def decode_npy(data: bytes) -> np.ndarray:
    """Decode .npy bytes; the header parse is cached, since every sample of a field shares it."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy payload")
    size_bytes = 2 if data[6] == 1 else 4
    start = 8 + size_bytes + int.from_bytes(data[8:8 + size_bytes], "little")
    dtype, shape, fortran = _npy_header(data[8 + size_bytes:start])
    array = np.frombuffer(data, dtype=dtype, offset=start, count=int(np.prod(shape)))
    return array.reshape(shape, order="F" if fortran else "C")


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    fields = ast.literal_eval(header.decode("latin1"))
    return np.dtype(fields["descr"]), tuple(fields["shape"]), bool(fields["fortran_order"])


def load_manifest(shards_dir: Path) -> dict:
    """Read a shard folder's manifest."""
    return json.loads((Path(shards_dir) / MANIFEST).read_text())


def sample_keys(manifest: dict) -> list[str]:
    """Every sample key of a manifest, in shard order."""
    return [key for shard in manifest["shards"] for key in shard["keys"]]


def split_keys(keys: list[str], fraction: float, seed: int, salt: str) -> tuple[list[str], list[str]]:
    """Split keys into (rest, picked) with round(fraction * len) picked by a seeded hash, order kept.

    The pick depends only on (salt, seed, key), not on sharding or world size.
    """
    ranked = sorted(keys, key=lambda key: hashlib.sha256(f"{salt}:{seed}:{key}".encode()).digest())
    picked = set(ranked[:round(fraction * len(keys))])
    return [k for k in keys if k not in picked], [k for k in keys if k in picked]


def restrict_manifest(manifest: dict, keys: Iterable[str]) -> dict:
    """The manifest of only `keys`: per-shard keys and counts filtered, empty shards left out."""
    wanted = set(keys)
    shards = []
    for shard in manifest["shards"]:
        kept = [k for k in shard["keys"] if k in wanted]
        if kept:
            shards.append({**shard, "keys": kept, "count": len(kept)})
    restricted = {k: v for k, v in manifest.items() if k != "class_histogram"}  # no longer true
    return {**restricted, "shards": shards, "num_samples": sum(s["count"] for s in shards)}


@dataclass(frozen=True)
class RankPlan:
    """What one rank reads in one epoch."""

    shards: list[str]
    num_samples: int  # samples this rank yields (the same on every rank)
    padded: int  # samples repeated across all ranks to even them out
    dropped: int  # samples left out across all ranks


def plan_rank(manifest: dict, rank: int, world_size: int, *, epoch: int = 0, seed: int = 0,
              shuffle: bool = True, uneven: Uneven = "pad") -> RankPlan:
    """Assign shards to `rank` for `epoch`: a shared permutation, then every world_size-th shard."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    shards = [(s["name"], s["count"]) for s in manifest["shards"]]
    if shuffle:
        random.Random(f"{seed}:{epoch}").shuffle(shards)  # same permutation on every rank
    if len(shards) < world_size:
        if uneven == "drop":
            raise ValueError(
                f"{len(shards)} shard(s) for {world_size} workers: write smaller shards "
                f"(data.shard samples_per_shard) or use fewer workers"
            )
        assigned = [[shards[r % len(shards)]] for r in range(world_size)]
    else:
        assigned = [shards[r::world_size] for r in range(world_size)]
    counts = [sum(c for _, c in mine) for mine in assigned]
    target = max(counts) if uneven == "pad" else min(counts)
    return RankPlan(
        shards=[name for name, _ in assigned[rank]],
        num_samples=target,
        padded=sum(max(0, target - c) for c in counts),
        dropped=sum(max(0, c - target) for c in counts),
    )


class ShardReader:
    """Reads one rank's share of a shard folder, epoch by epoch; `keys` limits it to those samples."""

    def __init__(self, shards_dir: Path, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, shuffle_buffer: int = 1000, uneven: Uneven = "pad",
                 keys: Iterable[str] | None = None) -> None:
        self.dir = Path(shards_dir)
        self.manifest = load_manifest(self.dir)
        self._keys = None if keys is None else frozenset(keys)
        if self._keys is not None:
            self.manifest = restrict_manifest(self.manifest, self._keys)
        self.modalities = list(self.manifest["modalities"])
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.shuffle_buffer, self.uneven = shuffle, shuffle_buffer, uneven

    def plan(self, epoch: int) -> RankPlan:
        """This rank's shards and sample count for `epoch`."""
        return plan_rank(self.manifest, self.rank, self.world_size, epoch=epoch, seed=self.seed,
                         shuffle=self.shuffle, uneven=self.uneven)

    def samples(self, epoch: int) -> Iterator[dict]:
        """Decoded samples (`__key__`, `<modality>.npy`, `cls`) this rank yields in `epoch`."""
        plan = self.plan(epoch)
        stages = [wds.SimpleShardList([str(self.dir / name) for name in plan.shards]), wds.tarfile_to_samples()]
        if self._keys is not None:
            stages.append(wds.select(lambda sample: sample["__key__"] in self._keys))
        if self.shuffle:
            stages.append(wds.shuffle(self.shuffle_buffer, rng=random.Random(f"{self.seed}:{epoch}:{self.rank}")))
        stages.append(wds.decode(wds.handle_extension("npy", decode_npy)))
        pipeline = wds.DataPipeline(*stages)
        yielded = 0
        while yielded < plan.num_samples:  # a second pass only happens when padding
            for sample in pipeline:
                yield sample
                yielded += 1
                if yielded == plan.num_samples:
                    return

    def batches(self, epoch: int, batch_size: int) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """(features by modality, labels) batches; every rank yields the same number of batches."""
        batch: list[dict] = []
        for sample in self.samples(epoch):
            batch.append(sample)
            if len(batch) == batch_size:
                yield self._collate(batch)
                batch = []
        if batch:
            yield self._collate(batch)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches per epoch for this rank (equal across ranks)."""
        return -(-self.plan(0).num_samples // batch_size)

    def _collate(self, batch: list[dict]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        features = {m: torch.from_numpy(np.stack([s[f"{m}.npy"] for s in batch])) for m in self.modalities}
        return features, torch.tensor([s["cls"] for s in batch], dtype=torch.long)
