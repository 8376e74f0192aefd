"""`data.kinetics_sounds`: Kinetics-Sounds from its list files and extracted media.

    root/train.txt, root/test.txt  lines `youtubeid_start_end,10,label`
    root/audio/<id>.wav, root/Image-01-FPS/<id>/*.jpg      or root/video/<id>.mp4 to extract from
"""

from __future__ import annotations

from pydantic import Field

from mmflow.engine import StepContext, component

from .media_dataset import MediaReaderParams, root_folder


class KineticsSoundsParams(MediaReaderParams):
    """Kinetics-Sounds' root and the names of its lists and media folders."""

    audio_dir: str = Field("audio", description="folder of <id>.wav files, relative to root")
    video_dir: str = Field("video", description="folder of <id>.mp4 videos, relative to root")
    lists: dict[str, str] = Field(default_factory=lambda: {"train": "train.txt", "test": "test.txt"},
                                  description="split -> list file, relative to root (add val: val.txt if you "
                                  "have one; otherwise validation is drawn from train)")


@component("data.kinetics_sounds", params=KineticsSoundsParams, outputs={"dataset": "dataset"}, reads=root_folder)
def kinetics_sounds(ctx: StepContext, params: KineticsSoundsParams) -> dict:
    """Kinetics-Sounds (31 classes): audio and frames of each 10 s clip."""
    from .media_dataset import ListedClip, read_media_dataset

    def parse(line: str) -> ListedClip:
        clip_id, _, label = (part.strip() for part in line.split(",", 2))
        if not clip_id or not label:
            raise ValueError(f"expected youtubeid_start_end,duration,label, got {line!r}")
        return ListedClip(clip_id, label)

    return read_media_dataset(ctx, params, parse)
