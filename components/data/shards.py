"""Webdataset tar shards: a writer with a manifest, and a rank-aware reader.

Every rank reads a disjoint set of shards, and all ranks yield the same number of samples per
epoch (DDP hangs otherwise). When the shards cannot be split evenly, `uneven="pad"` repeats a
rank's own samples up to the largest rank's count and `uneven="drop"` truncates to the smallest;
either way the plan reports how many samples were padded or dropped.
"""

from __future__ import annotations

import ast
import collections
import functools
import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal

import numpy as np
import torch
import webdataset as wds

from mmflow.engine import InputDataError

from .datasets import SEGMENTS, Sample, is_file_name

MANIFEST = "manifest.json"
Uneven = Literal["pad", "drop"]
Verify = Literal["once", "every_epoch"]
_VERIFIED: dict[tuple[str, str], str | None] = {}  # (tar, manifest SHA-256) -> what is wrong, hashed once a process


def write_shards(samples: Iterable[Sample], out: Path, samples_per_shard: int, num_classes: int,
                 background: int | None = None) -> dict:
    """Write samples into `shard-NNNNNN.tar` files of `samples_per_shard` each, plus the manifest.

    Sequence samples also store their per-segment labels (`segments.npy`); `background` is
    their background class, recorded in the manifest.
    """
    out.mkdir(parents=True)
    shards: list[dict] = []
    modalities: dict[str, dict] = {}
    batch: list[dict] = []

    def flush() -> None:
        shards.append(write_tar(batch, out / shard_name(len(shards)), num_classes))
        batch.clear()

    for sample in samples:
        record = {"__key__": sample.key, "cls": sample.label}
        for name, array in sample.features.items():
            record[f"{name}.npy"] = np.ascontiguousarray(array)
            modalities.setdefault(name, {"shape": list(array.shape), "dtype": str(array.dtype)})
        if sample.segments is not None:
            record[f"{SEGMENTS}.npy"] = np.ascontiguousarray(sample.segments, dtype=np.int64)
        batch.append(record)
        if len(batch) == samples_per_shard:
            flush()
    if batch:
        flush()
    extra = {} if background is None else {"background": background}
    return write_manifest(out, shards, modalities, num_classes, samples_per_shard, **extra)


def shard_name(index: int) -> str:
    """The file name of the index-th shard."""
    return f"shard-{index:06d}.tar"


def write_tar(records: Iterable[dict], path: Path, num_classes: int) -> dict:
    """Write webdataset records (`__key__`, `cls`, fields) to `path`; return its manifest entry.

    Written under a temporary name and renamed when complete, so no truncated tar is left behind.
    """
    partial = path.with_name(path.name + ".partial")
    entry = {"name": path.name, "count": 0, "keys": [], "class_counts": [0] * num_classes}
    # A fixed mtime keeps float timestamps out of the headers: no PAX header per member
    # (half the tar parsing when reading) and byte-identical shards for identical data.
    with wds.TarWriter(str(partial), mtime=0) as writer:
        for record in records:
            writer.write(record)
            entry["count"] += 1
            entry["keys"].append(record["__key__"])
            entry["class_counts"][record["cls"]] += 1
    partial.rename(path)
    data = path.read_bytes()
    return {**entry, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_manifest(out: Path, shards: list[dict], modalities: dict[str, dict], num_classes: int,
                   samples_per_shard: int, **extra: object) -> dict:
    """Write `manifest.json` for `shards` (entries from `write_tar`) and return it."""
    manifest = {
        "format": "mmflow.shards/1",
        "modalities": modalities,
        "num_classes": num_classes,
        "num_samples": sum(s["count"] for s in shards),
        "samples_per_shard": samples_per_shard,
        "class_histogram": [sum(s["class_counts"][c] for s in shards) for c in range(num_classes)],
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
        "digest": hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest(),
        **extra,
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


def tar_problem(path: str, sha256: str, again: bool = False) -> str | None:
    """What is wrong with the tar at `path` against the SHA-256 its manifest records, or None; hashed once per
    process unless `again` (a changed tar then goes unnoticed until the next process)."""
    if again or (path, sha256) not in _VERIFIED:
        try:
            digest = hashlib.sha256()
            with open(path, "rb") as tar:
                for block in iter(lambda: tar.read(1 << 20), b""):
                    digest.update(block)
        except OSError as error:
            _VERIFIED[path, sha256] = f"unreadable shard ({error.strerror or error})"
        else:
            _VERIFIED[path, sha256] = None if digest.hexdigest() == sha256 else (
                "the shard changed after it was written (its SHA-256 is not the manifest's)")
    return _VERIFIED[path, sha256]


def load_manifest(shards_dir: Path) -> dict:
    """Read a shard folder's manifest; each shard it lists must be a file of that folder."""
    path = Path(shards_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        names = [shard["name"] for shard in manifest["shards"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise InputDataError(f"{path}: not a shard manifest ({type(exc).__name__}: {exc})") from None
    for name in names:
        if not is_file_name(name):
            raise InputDataError(f"{path}: shard name {name!r} is not a file name (shards are read from its folder)")
    return manifest


def sample_keys(manifest: dict) -> list[str]:
    """Every sample key of a manifest, in shard order."""
    return [key for shard in manifest["shards"] for key in shard["keys"]]


def split_keys(keys: list[str], fraction: float, seed: int, salt: str) -> tuple[list[str], list[str]]:
    """Split keys into (rest, picked) with round(fraction * len) picked by a seeded hash, order kept;
    a fraction > 0 picks at least one key.

    The pick depends only on (salt, seed, key), not on sharding or world size.
    """
    ranked = sorted(keys, key=lambda key: hashlib.sha256(f"{salt}:{seed}:{key}".encode()).digest())
    count = max(1, round(fraction * len(keys))) if fraction > 0 else 0
    picked = set(ranked[:count])
    return [k for k in keys if k not in picked], [k for k in keys if k in picked]


def restrict_manifest(manifest: dict, keys: Iterable[str]) -> dict:
    """The manifest of only `keys`: per-shard keys and counts filtered, empty shards left out."""
    wanted = set(keys)
    shards = []
    for shard in manifest["shards"]:
        kept = [k for k in shard["keys"] if k in wanted]
        if kept:
            entry = {k: v for k, v in shard.items() if k != "class_counts"}  # no longer true
            stored = shard.get("stored", shard["count"])  # what the tar holds, to detect truncation
            shards.append({**entry, "keys": kept, "count": len(kept), "stored": stored})
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
    """Reads one rank's share of a shard folder, epoch by epoch; `keys` limits it to those samples.

    Media shards (a manifest with a `media` section) are decoded and transformed as they are
    read, with training augmentation when `augment`. A truncated or corrupt tar (one that
    yields fewer samples than its manifest entry says, or whose SHA-256 is not the manifest's:
    checked before its first read in a process, or every epoch with `verify="every_epoch"`)
    raises an InputDataError naming it, or with `on_error="skip"` is left out and counted in
    `corrupt_reads` (once per tar and epoch) while padding keeps the rank's count; with
    `pad=False` (evaluation) each readable sample is yielded once instead.
    """

    def __init__(self, shards_dir: Path, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, shuffle_buffer: int = 1000, uneven: Uneven = "pad",
                 keys: Iterable[str] | None = None, augment: bool = False, workers: int = 0,
                 on_error: Literal["fail", "skip"] = "fail", verify: Verify = "once", pad: bool = True) -> None:
        self.dir = Path(shards_dir)
        self.manifest = load_manifest(self.dir)
        if not self.manifest["num_samples"]:
            raise InputDataError(f"{self.dir / MANIFEST}: no samples (is this the split of a dataset that has none?)")
        self._keys = None if keys is None else frozenset(keys)
        if self._keys is not None:
            self.manifest = restrict_manifest(self.manifest, self._keys)
            if not self.manifest["num_samples"]:
                raise InputDataError(f"{self.dir / MANIFEST}: none of the {len(self._keys)} requested keys is here")
        self.modalities = list(self.manifest["modalities"])
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.shuffle_buffer, self.uneven = shuffle, shuffle_buffer, uneven
        self.workers, self.on_error, self.verify, self.pad = workers, on_error, verify, pad
        self.corrupt_reads = 0  # shard reads cut short, in this process (on_error="skip")
        self._decode_media = None
        if "media" in self.manifest:
            from .media_decoder import MediaDecoder

            self._decode_media = MediaDecoder(self.manifest["media"], augment)

    def plan(self, epoch: int) -> RankPlan:
        """This rank's shards and sample count for `epoch`."""
        return plan_rank(self.manifest, self.rank, self.world_size, epoch=epoch, seed=self.seed,
                         shuffle=self.shuffle, uneven=self.uneven)

    def samples(self, epoch: int, part: tuple[int, int] = (0, 1), chunk: int = 1) -> Iterator[dict]:
        """Decoded samples (`__key__`, `<modality>.npy`, `cls`) this rank yields in `epoch`.

        `part=(i, n)`: decode and yield only chunks i, i + n, i + 2n, ... of `chunk` samples of
        that sequence, so n loader processes together yield exactly it (each reads the tars and
        decodes its share).
        """
        index, parts = part
        plan = self.plan(epoch)
        urls = {shard["name"]: shard.get("url") or str(self.dir / shard["name"]) for shard in self.manifest["shards"]}
        stored = {urls[s["name"]]: s.get("stored", s["count"]) for s in self.manifest["shards"]}
        # loader processes (parts > 1) take the parent's check (see batches)
        reported: set[str] = set()  # tars counted as corrupt this epoch, however many padding passes read them
        readable = self.readable(plan.shards, again=self.verify == "every_epoch" and parts == 1, reported=reported)
        seen: collections.Counter[str] = collections.Counter()  # samples read per tar in this pass
        required = {"cls", *self.modalities}
        flagged: set[str] = set()

        def tar_error(error: Exception) -> bool:
            url = next((a for a in reversed(error.args) if isinstance(a, str) and a in stored), "a shard")
            flagged.add(url)
            return self._corrupt(url, f"truncated or corrupt shard ({type(error).__name__}: {error.args[0]})",
                                 reported)

        def count(source: Iterable[dict]) -> Iterator[dict]:
            for sample in source:
                fields = {name.split(".")[0] for name in sample if not name.startswith("__")}
                if fields < required:  # the tar ends inside this sample
                    flagged.add(sample["__url__"])
                    self._corrupt(sample["__url__"], f"truncated shard: sample {sample['__key__']} is incomplete",
                                  reported)
                    continue
                seen[sample["__url__"]] += 1
                yield sample

        stages = [wds.SimpleShardList([urls[name] for name in readable]),
                  wds.tarfile_to_samples(handler=tar_error), count]
        if self._keys is not None:
            stages.append(wds.select(lambda sample: sample["__key__"] in self._keys))
        if self.shuffle:
            stages.append(wds.shuffle(self.shuffle_buffer, rng=random.Random(f"{self.seed}:{epoch}:{self.rank}")))
        position = itertools.count()  # across padding passes, like the sequence itself
        stages.append(lambda source: (s for s in source if next(position) // chunk % parts == index))
        stages.append(wds.decode(wds.handle_extension("npy", decode_npy)))
        if self._decode_media is not None:
            stages.append(wds.map(self._decode_media))
        pipeline = wds.DataPipeline(*stages)
        target = sum(min(chunk, plan.num_samples - start) for start in range(index * chunk, plan.num_samples,
                                                                             parts * chunk))
        yielded = 0
        while yielded < target:  # a second pass only happens when padding
            seen.clear()
            flagged.clear()
            for sample in pipeline:
                yield sample
                yielded += 1
                if yielded == target:
                    return
            for url in (urls[name] for name in readable):  # a tar cut at a member boundary reads silently short
                if url not in flagged and seen[url] < stored[url]:
                    self._corrupt(url, f"truncated shard: {seen[url]} of {stored[url]} samples readable", reported)
            if not seen:
                raise InputDataError(f"{self.dir}: no readable sample in this rank's shards for epoch {epoch}")
            if not self.pad:
                return

    def readable(self, names: list[str], again: bool = False, reported: set[str] | None = None) -> list[str]:
        """The shards of `names` whose SHA-256 is the manifest's (a remote `url` is not checked); each other one
        fails the read, or is left out and counted."""
        entries = {shard["name"]: shard for shard in self.manifest["shards"]}
        kept = []
        for name in names:
            entry = entries[name]
            problem = None if entry.get("url") or "sha256" not in entry else \
                tar_problem(str(self.dir / name), entry["sha256"], again)
            if problem is None:
                kept.append(name)
            else:
                self._corrupt(str(self.dir / name), problem, reported)
        return kept

    def _corrupt(self, url: str, reason: str, reported: set[str] | None = None) -> bool:
        """Fail naming the shard, or count it (once in `reported`) and go on (webdataset handler protocol:
        True = continue)."""
        if self.on_error == "fail":
            raise InputDataError(f"{url}: {reason}")
        if reported is None or url not in reported:
            self.corrupt_reads += 1
        if reported is not None:
            reported.add(url)
        return True

    def batches(self, epoch: int, batch_size: int) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """(features by modality, labels) batches; every rank yields the same number of batches.

        With `workers` > 0, that many processes decode and collate whole batches in turn; the
        batches are the same.
        """
        if self.workers:
            self.readable(self.plan(epoch).shards, again=self.verify == "every_epoch")  # not in every loader process
            loader = torch.utils.data.DataLoader(_LoaderPart(self, epoch, batch_size), batch_size=None,
                                                 num_workers=self.workers)
            try:
                yield from loader
            except InputDataError as error:  # re-raised by the DataLoader with the worker's traceback in it
                raise InputDataError(str(error).strip().splitlines()[-1].split("InputDataError: ", 1)[-1]) from None
        else:
            yield from self._batched(self.samples(epoch), batch_size)

    def _batched(self, samples: Iterable[dict], batch_size: int) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        batch: list[dict] = []
        for sample in samples:
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
        features = {m: torch.from_numpy(np.stack([np.asarray(s[f"{m}.npy"]) for s in batch])) for m in self.modalities}
        if f"{SEGMENTS}.npy" in batch[0]:  # sequence samples: a label per segment
            return features, torch.from_numpy(np.stack([np.asarray(s[f"{SEGMENTS}.npy"]) for s in batch]))
        return features, torch.tensor([int(s["cls"]) for s in batch], dtype=torch.long)


class _LoaderPart(torch.utils.data.IterableDataset):
    """One DataLoader process's batches of a reader's epoch: every n-th batch (the processes take
    turns, so the order is kept)."""

    def __init__(self, reader: ShardReader, epoch: int, batch_size: int) -> None:
        self.reader, self.epoch, self.batch_size = reader, epoch, batch_size

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        part = self.reader.samples(self.epoch, (info.id, info.num_workers), chunk=self.batch_size)
        return self.reader._batched(part, self.batch_size)

