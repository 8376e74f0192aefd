"""`data.ave`: the AVE dataset for classification, each clip cut to its annotated event segment.

    root/trainSet.txt, valSet.txt, testSet.txt   lines `Category&videoID&quality&start&end`
    root/AVE/<videoID>.mp4                        the 10 s videos (audio and frames come from here)
    root/Audio/<videoID>.wav, root/Image-01-FPS/<videoID>/*.jpg   optional, already extracted (1 fps)

Frame i is second i of the video, so the event's frames are frames[start:end]; its audio is
the [start, end] seconds of the clip's audio.
"""

from __future__ import annotations

from pydantic import Field

from mmflow.engine import StepContext, component

from .media_dataset import ListedClip, MediaReaderParams, root_folder


class AVEParams(MediaReaderParams):
    """AVE's root and the names of its lists and media folders."""

    audio_dir: str = Field("Audio", description="folder of <videoID>.wav files, relative to root")
    video_dir: str = Field("AVE", description="folder of <videoID>.mp4 videos, relative to root")
    lists: dict[str, str] = Field(
        default_factory=lambda: {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"},
        description="split -> list file, relative to root (no val: validation is drawn from train)")


@component("data.ave", params=AVEParams, outputs={"dataset": "dataset"}, reads=root_folder)
def ave(ctx: StepContext, params: AVEParams) -> dict:
    """AVE (28 events) for classification: the audio and frames of each video's event segment."""
    from .media_dataset import read_media_dataset

    return read_media_dataset(ctx, params, _parse_row)


def _parse_row(line: str) -> ListedClip | None:
    """One `Category&videoID&quality&start&end` line; None for Annotations.txt's header."""
    fields = [part.strip() for part in line.split("&")]
    if fields[0].lower() == "category":  # Annotations.txt's header
        return None
    if len(fields) != 5:
        raise ValueError(f"expected Category&videoID&quality&start&end, got {line!r}")
    category, video, _, start, end = fields
    start_s, end_s = float(start), float(end)
    if not 0 <= start_s < end_s:
        raise ValueError(f"event segment {start}-{end} is empty")
    return ListedClip(video, category, start_s, end_s)
