"""`data.shard`: write a dataset's train/test splits as webdataset tar shards with manifests."""

from __future__ import annotations

from pydantic import Field

from mmflow.engine import Params, StepContext, component


class ShardParams(Params):
    """How to cut the splits into shards."""

    samples_per_shard: int = Field(256, ge=1, description="samples per tar shard (the last may hold fewer)")
    shuffle: bool = Field(True, description="shuffle sample order before writing, so shards mix classes")


@component("data.shard", params=ShardParams, inputs={"dataset": "dataset"},
           outputs={"train": "shards", "test": "shards"})
def shard(ctx: StepContext, params: ShardParams) -> dict:
    """Write train/test splits as fixed-size webdataset shards plus a manifest (keys, counts, classes, digest)."""
    import random

    from .datasets import iter_samples, read_info
    from .shards import write_shards

    info = read_info(ctx.inputs["dataset"])
    metrics = {}
    for split in ("train", "test"):
        samples = list(iter_samples(ctx.inputs["dataset"], split))
        if params.shuffle:
            random.Random(f"{ctx.seed}:{split}").shuffle(samples)
        manifest = write_shards(samples, ctx.output(split), params.samples_per_shard, info.num_classes)
        metrics[f"{split}_samples"] = manifest["num_samples"]
        metrics[f"{split}_shards"] = len(manifest["shards"])
        ctx.log(f"{split}: {manifest['num_samples']} samples in {len(manifest['shards'])} shard(s)")
    return metrics
