"""`data.shard`: write a dataset's train/val/test splits as webdataset tar shards with manifests."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from mmflow.engine import Params, StepContext, component, write_shipped

from .preprocess import AudioParams, VisualParams

SPLITS = ("train", "val", "test")


class ShardParams(Params):
    """How to cut the splits into shards; for media datasets, what to store and how to preprocess."""

    samples_per_shard: int = Field(256, ge=1, description="samples per tar shard (the last may hold fewer)")
    shuffle: bool = Field(True, description="shuffle sample order before writing, so shards mix classes")
    store: Literal["raw", "arrays"] = Field(
        "raw", description="media datasets: raw keeps WAV and JPEG bytes (decoded while training); arrays keeps "
        "audio features and resized uint8 frames (less work per epoch, larger shards)")
    audio: AudioParams = Field(default_factory=AudioParams, description="media datasets: audio features")
    visual: VisualParams = Field(default_factory=VisualParams, description="media datasets: frames per clip, sizes")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="media datasets: a missing or undecodable file fails the step (naming it), or is "
        "skipped and counted in the metrics")
    url_template: str | None = Field(
        None, description="where readers fetch the shards once you copy each split's folder there, e.g. "
        "https://host/cremad/{split}/{name} (schemes http, https, gs, hf, ais); null: from the run directory")

    @field_validator("url_template")
    @classmethod
    def _streamable(cls, template: str | None) -> str | None:
        if template is None:
            return None
        if template.startswith("pipe:"):
            raise ValueError("pipe: URLs run shell commands, which a workflow may not do; publish the shards at an "
                             "http(s), gs, hf or ais URL")
        if not re.match(r"^(https?|gs|hf|ais)://", template) or re.search(r"['\s]", template):
            raise ValueError(f"{template!r} is not an http(s)://, gs://, hf:// or ais:// URL without quotes or spaces")
        if "{name}" not in template:
            raise ValueError("the template must contain {name} (the shard's file name); {split} is optional")
        return template


@component("data.shard", params=ShardParams, inputs={"dataset": "dataset"},
           outputs={"train": "shards", "val": "shards", "test": "shards"}, version="2",
           headline=("*_samples",))
def shard(ctx: StepContext, params: ShardParams) -> dict:
    """Write each split as fixed-size webdataset shards plus a manifest (keys, counts per class and shard,
    sizes, digests); a split the dataset lacks is written empty. Media datasets convert in parallel tasks."""
    import json
    import random

    from .ave_features import iter_feature_samples
    from .datasets import META_FILE, iter_samples, read_info
    from .shards import write_shards

    meta = json.loads((ctx.inputs["dataset"] / META_FILE).read_text())
    if meta.get("format") == "media":
        return _shard_media(ctx, params, meta)
    info = read_info(ctx.inputs["dataset"])
    metrics = {}
    for split in SPLITS:
        order = list(range(info.splits.get(split, 0)))
        if params.shuffle:
            random.Random(f"{ctx.seed}:{split}").shuffle(order)
        if not order:
            samples = []
        elif meta.get("format") == "ave_features":  # the public AVE features, read where they are
            samples = iter_feature_samples(meta, split, order)
        else:  # one at a time
            samples = iter_samples(ctx.inputs["dataset"], split, order)
        manifest = write_shards(samples, ctx.output(split), params.samples_per_shard, info.num_classes,
                                info.background)
        metrics.update(_split_metrics(ctx, split, _with_urls(ctx, params, split, manifest)))
    return metrics


def _shard_media(ctx: StepContext, params: ShardParams, info: dict) -> dict:
    """Convert clips to shards, one Ray task per shard; skipped clips are listed in the manifest."""
    import dataclasses
    import random
    from pathlib import Path

    from .media_dataset import read_clips
    from .media_shards import media_modalities, write_media_shard
    from .shards import shard_name, write_manifest

    modalities = media_modalities(params.audio.model_dump(), params.visual)
    media = {"store": params.store, "audio": params.audio.settings(), "visual": params.visual.model_dump()}
    jobs, splits = [], []
    for split in SPLITS:
        clips = read_clips(ctx.inputs["dataset"], split)
        if params.shuffle:
            random.Random(f"{ctx.seed}:{split}").shuffle(clips)
        ctx.output(split).mkdir()
        for index, start in enumerate(range(0, len(clips), params.samples_per_shard)):
            chunk = clips[start:start + params.samples_per_shard]
            jobs.append({"clips": [dataclasses.asdict(c) for c in chunk], "store": params.store,
                         "audio": media["audio"], "visual": media["visual"], "on_error": params.on_error,
                         "num_classes": info["num_classes"], "path": str(ctx.output(split) / shard_name(index))})
            splits.append(split)
    ctx.log(f"converting {sum(info['splits'].values())} clips into {len(jobs)} shard(s) ({params.store})")
    entries = ctx.run_tasks(write_media_shard, jobs, at_once=1)
    for job, entry in zip(jobs, entries):  # written on a node without this run's folder
        write_shipped(Path(job["path"]).parent, entry.pop("shipped"))
    metrics: dict[str, float] = {}
    for split in SPLITS:
        mine = [entry for entry, owner in zip(entries, splits) if owner == split]
        skipped = [s for entry in mine for s in entry.pop("skipped")]
        manifest = write_manifest(ctx.output(split), [e for e in mine if e["count"]], modalities,
                                  info["num_classes"], params.samples_per_shard, classes=info["classes"],
                                  media=media, skipped=skipped)
        metrics.update(_split_metrics(ctx, split, _with_urls(ctx, params, split, manifest)),
                       **{f"{split}_skipped": len(skipped)})
        for item in skipped[:3]:
            ctx.log(f"skipped {item['error']}")
    metrics["skipped_samples"] = sum(metrics[f"{split}_skipped"] for split in SPLITS)
    return metrics


def _with_urls(ctx: StepContext, params: ShardParams, split: str, manifest: dict) -> dict:
    """Record each shard's streaming URL in the manifest (the template filled in)."""
    import json

    from .shards import MANIFEST

    if params.url_template is None:
        return manifest
    for shard in manifest["shards"]:
        shard["url"] = params.url_template.format(split=split, name=shard["name"])
    (ctx.output(split) / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _split_metrics(ctx: StepContext, split: str, manifest: dict) -> dict[str, int]:
    ctx.log(f"{split}: {manifest['num_samples']} samples in {len(manifest['shards'])} shard(s), "
            f"{manifest['bytes'] / 2**20:.1f} MiB")
    return {f"{split}_samples": manifest["num_samples"], f"{split}_shards": len(manifest["shards"]),
            f"{split}_bytes": manifest["bytes"]}
