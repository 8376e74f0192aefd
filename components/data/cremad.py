"""`data.cremad`: CREMA-D in the layout the OGM-GE / PMR code reads.

    root/train.csv, root/test.csv      lines `clip_id,EMO` (no header)
    root/AudioWAV/<clip_id>.wav
    root/Image-01-FPS/<clip_id>/*.jpg  1 frame per second, in name order
    root/VideoFlash/<clip_id>.flv      only needed when frames or audio are missing
"""

from __future__ import annotations

from pydantic import Field

from mmflow.engine import StepContext, component

from .media_dataset import MediaReaderParams, root_folder

EMOTIONS = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]  # the reference code's index order


class CremaDParams(MediaReaderParams):
    """CREMA-D's root; its media folders as the reference code names them."""

    lists: dict[str, str] = Field(default_factory=lambda: {"train": "train.csv", "test": "test.csv"},
                                  description="split -> list file, relative to root (validation is drawn from train)")
    classes: list[str] | None = Field(EMOTIONS, description="emotion codes in index order")


@component("data.cremad", params=CremaDParams, outputs={"dataset": "dataset"}, reads=root_folder)
def cremad(ctx: StepContext, params: CremaDParams) -> dict:
    """CREMA-D (6 emotions): audio and frames of each clip; validation drawn from train."""
    from .media_dataset import ListedClip, read_media_dataset

    def parse(line: str) -> ListedClip:
        clip_id, emotion = (part.strip() for part in line.split(","))
        return ListedClip(clip_id, emotion)

    return read_media_dataset(ctx, params, parse)
