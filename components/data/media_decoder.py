"""Decoding media shards while reading: a record's WAV and JPEG bytes (or stored arrays) into the arrays a
model takes, with the frame sampling and augmentation of training."""

from __future__ import annotations

from typing import Any

import torch

from mmflow.engine import InputDataError

from .media import MediaError, decode_jpeg, read_audio
from .preprocess import AudioFeatures, FrameTransform, frame_indices


def stack_frames(images: list[torch.Tensor]) -> torch.Tensor:
    """T x 3 x H x W, frames of another size than the first resized to it."""
    from torchvision.transforms import v2

    size = list(images[0].shape[1:])
    return torch.stack([x if list(x.shape[1:]) == size else v2.functional.resize(x, size, antialias=True)
                        for x in images])


class MediaDecoder:
    """Turns a media shard's record into `audio.npy` (F x T) and `visual.npy` (T x 3 x S x S) arrays."""

    def __init__(self, media: dict[str, Any], augment: bool) -> None:
        self.store = media["store"]
        self.audio = AudioFeatures(media["audio"]) if self.store == "raw" else None
        self.num_frames = media["visual"]["num_frames"]
        self.augment = augment
        self.frames = FrameTransform(media["visual"]["size"], train=augment)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        where = f"{sample.get('__url__', 'shard')}: {sample['__key__']}"
        try:
            if self.store == "raw":
                samples, rate = read_audio(sample["audio.wav"], name=f"{where}.audio.wav")
                audio = self.audio(samples, rate)
                names = sorted(k for k in sample if k.startswith("visual.") and k.endswith(".jpg"))
                picked = frame_indices(len(names), self.num_frames, self.augment)
                frames = stack_frames([decode_jpeg(sample[names[i]], f"{where}.{names[i]}") for i in picked])
            else:
                audio = sample["audio.npy"]
                stored = sample["visual.npy"]
                frames = torch.from_numpy(stored[frame_indices(len(stored), self.num_frames, self.augment)])
        except MediaError as error:
            raise InputDataError(str(error)) from None
        return {"__key__": sample["__key__"], "cls": sample["cls"], "audio.npy": audio,
                "visual.npy": self.frames(frames)}
