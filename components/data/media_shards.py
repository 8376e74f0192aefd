"""Media datasets to webdataset shards (media_decoder.py decodes them back while reading).

`store: raw` keeps each clip's WAV (`audio.wav`) and JPEG frames (`visual.000.jpg`, ...) as
bytes, decoded by the loader; `store: arrays` keeps the audio features (`audio.npy`) and the
frames resized to `store_size` as uint8 (`visual.npy`), so the loader only picks frames and
augments. Either way every file is decoded once while converting, so bad media surface here,
named, rather than mid-training. One shard is one task; tasks run in parallel on Ray.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mmflow.engine import InputDataError, node_folder

from .media import MediaError, decode_jpeg, encode_wav, read_audio, read_bytes
from .media_dataset import Clip
from .media_decoder import stack_frames
from .preprocess import AudioFeatures, VisualParams, resize_frames
from .shards import write_tar


def media_modalities(audio: dict[str, Any], visual: VisualParams) -> dict[str, dict[str, Any]]:
    """What the loader yields per sample: audio F x T and visual T x 3 x S x S, float32."""
    return {"audio": {"shape": AudioFeatures(audio).shape(), "dtype": "float32"},
            "visual": {"shape": [visual.num_frames, 3, visual.size, visual.size], "dtype": "float32"}}


def write_media_shard(job: dict[str, Any], device: Any = None) -> dict[str, Any]:
    """Task: write one shard of clips; returns its manifest entry plus `skipped` [{key, error}] and
    `shipped` (the tar's bytes when this node lacks the step's folder, for the driver to write)."""
    audio = AudioFeatures(job["audio"]) if job["store"] == "arrays" else None
    visual = VisualParams(**job["visual"])
    skipped: list[dict[str, str]] = []

    def records():
        for fields in job["clips"]:
            clip = Clip(**fields)
            try:
                yield clip_record(clip, job["store"], audio, visual)
            except MediaError as error:
                if job["on_error"] == "fail":
                    raise InputDataError(f"{error} (clip {clip.key}; on_error: skip skips such clips)") from None
                skipped.append({"key": clip.key, "error": str(error)})

    with node_folder(Path(job["path"]).parent) as (folder, shipped):
        path = folder / Path(job["path"]).name
        entry = write_tar(records(), path, job["num_classes"])
        if entry["count"] == 0:
            path.unlink()
    return {**entry, "skipped": skipped, "shipped": shipped}


def clip_record(clip: Clip, store: str, audio: AudioFeatures | None, visual: VisualParams) -> dict[str, Any]:
    """The webdataset record of one clip; raises MediaError for missing or undecodable media."""
    if clip.missing:  # recorded by the reader as "<path>: <reason>"
        path, _, reason = clip.missing.partition(": ")
        raise MediaError(path, reason)
    if clip.audio is None or not clip.frames:
        raise MediaError(clip.key, "no audio or no frames")
    record: dict[str, Any] = {"__key__": clip.key, "cls": clip.label}
    frame_files = clip.frames
    if clip.start is not None:  # frame i is second i
        frame_files = clip.frames[int(clip.start):max(int(clip.start) + 1, math.ceil(clip.end))]
        if not frame_files:
            raise MediaError(Path(clip.frames[0]).parent, f"no frame in the event segment {clip.start}-{clip.end} s")
    frames = [(file, read_bytes(file)) for file in frame_files]
    images = [decode_jpeg(data, file) for file, data in frames]  # decoded once: bad JPEGs fail here
    samples, rate = _segment_audio(clip)
    if store == "raw":
        record["audio.wav"] = encode_wav(samples, rate) if clip.start is not None else read_bytes(clip.audio)
        for i, (_, data) in enumerate(frames):
            record[f"visual.{i:03d}.jpg"] = data
    else:
        record["audio.npy"] = audio(samples, rate)
        record["visual.npy"] = resize_frames(stack_frames(images), visual.store_size)
    return record


def _segment_audio(clip: Clip) -> tuple[np.ndarray, int]:
    samples, rate = read_audio(clip.audio)
    if clip.start is not None:
        samples = samples[round(clip.start * rate):round(clip.end * rate)]
        if samples.size == 0:
            raise MediaError(clip.audio, f"no audio in the event segment {clip.start}-{clip.end} s")
    return samples, rate
