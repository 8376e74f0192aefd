"""Media datasets: what a real-layout reader produces — an index of clips, not their contents.

A media dataset folder holds `dataset.json` (format "media", classes, split sizes, how the
validation split was made) and one `<split>.jsonl` per split (train, val, test), one clip per
line: key, label, the audio file, the sorted frame files, and the event segment in seconds
when only part of the clip counts. Media stay where they are (absolute paths);
frames or audio a reader had to extract from a video are written inside its own output
folder (paths relative to it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
import re
from typing import Any

from pydantic import Field, field_validator

from mmflow.engine import InputDataError, Params, StepContext, node_folder, write_shipped

from .datasets import META_FILE, is_file_name

SPLITS = ("train", "val", "test")
VIDEO_SUFFIXES = (".mp4", ".flv", ".mkv", ".avi", ".webm")


@dataclass
class Clip:
    """One labelled clip of a media dataset."""

    key: str
    label: int
    audio: str | None = None  # a WAV file
    frames: list[str] = field(default_factory=list)  # JPEG files, sorted by name
    start: float | None = None  # the labelled segment, in seconds (None: the whole clip)
    end: float | None = None
    missing: str | None = None  # why the clip's media could not be found or extracted


@dataclass(frozen=True)
class ListedClip:
    """A clip as a split list names it, before its media are located."""

    id: str
    label: str  # the class name
    start: float | None = None
    end: float | None = None
    where: str = ""  # list file:line, for errors


class RootParams(Params):
    """A source read from a folder on disk: `root` is required, and shipped workflows leave it to --set."""

    root: str | None = Field(None, description="the dataset's root folder (required; a shipped workflow leaves it "
                             "to --set steps.<step>.params.root=PATH)")

    @field_validator("root")
    @classmethod
    def _required(cls, root: str | None) -> str:
        if not root:
            raise ValueError("set the dataset's root folder, e.g. --set steps.<step>.params.root=/path/to/dataset")
        return root


def root_folder(params: RootParams) -> list[Path]:
    """What a reader of a dataset's root takes from outside the run: the whole folder (for its cache key)."""
    return [Path(params.root)]


class MediaReaderParams(RootParams):
    """Where a real-layout dataset lives and how to complete it."""

    lists: dict[str, str] = Field(description="split (train, val, test) -> list file, relative to root; "
                                  "no val: validation is drawn from train")
    audio_dir: str = Field("AudioWAV", description="folder of <clip>.wav files, relative to root")
    frames_dir: str = Field("Image-01-FPS", description="folder of <clip>/*.jpg frame folders, relative to root")
    video_dir: str = Field("VideoFlash", description="folder of <clip>.<mp4|flv|...> videos, relative to root: "
                           "frames (1 fps) and audio are extracted from a clip's video when missing")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of train drawn (seeded) as validation "
                                "when the dataset has no validation list")
    classes: list[str] | None = Field(None, description="class names in index order (null: the labels found "
                                      "in the lists, sorted)")

    @field_validator("lists")
    @classmethod
    def _splits(cls, lists: dict[str, str]) -> dict[str, str]:
        if not {"train", "test"} <= set(lists) or not set(lists) <= set(SPLITS):
            raise ValueError(f"need train and test lists (and optionally val), got {sorted(lists)}")
        return lists


def read_list(path: Path, parse: Any) -> list[ListedClip]:
    """Parse a split list line by line with `parse(line) -> ListedClip | None` (None skips a header)."""
    if not path.is_file():
        raise InputDataError(f"{path}: split list not found")
    clips, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            clip = parse(line.strip())
        except (ValueError, KeyError, IndexError) as exc:
            raise InputDataError(f"{path}:{number}: {exc}") from None
        if clip is None:
            continue
        clip = dataclasses.replace(clip, where=f"{path}:{number}")
        if not is_file_name(clip.id):
            raise InputDataError(f"{path}:{number}: clip id {clip.id!r} is not a file name (media are looked up "
                                 "by it inside the dataset's root)")
        if clip.id in seen:
            raise InputDataError(f"{path}:{number}: clip {clip.id!r} is listed twice")
        seen.add(clip.id)
        clips.append(clip)
    if not clips:
        raise InputDataError(f"{path}: no clips listed")
    return clips


def check_keys(splits: dict[str, list[ListedClip]]) -> None:
    """Each sample key names one clip: ids that differ only where a key cannot hold a character (dots, spaces...)
    would share a key, in the shards and in the names of media extracted for them."""
    owners: dict[str, ListedClip] = {}
    for clips in splits.values():
        for clip in clips:
            key = sample_key(clip.id)
            first = owners.setdefault(key, clip)
            if first.id != clip.id:
                raise InputDataError(f"{clip.where}: clips {clip.id!r} and {first.id!r} ({first.where}) would share "
                                     f"the sample key {key!r}; rename one")


def class_names(splits: dict[str, list[ListedClip]], classes: list[str] | None) -> list[str]:
    """The given class order, checked against the lists, or the labels found, sorted (numbers numerically)."""
    found = {clip.label for clips in splits.values() for clip in clips}
    if classes is None:
        return sorted(found, key=lambda name: (not name.isdigit(), int(name) if name.isdigit() else 0, name))
    for clips in splits.values():
        for clip in clips:
            if clip.label not in classes:
                raise InputDataError(f"{clip.where}: unknown class {clip.label!r} (known: {', '.join(classes)})")
    return classes


def locate(ctx: StepContext, params: MediaReaderParams, root: Path, splits: dict[str, list[ListedClip]],
           classes: list[str]) -> dict[str, list[Clip]]:
    """Find every clip's audio and frames; extract what is missing from its video (parallel tasks)."""
    out = ctx.output("dataset")
    located: dict[str, list[Clip]] = {}
    jobs: list[dict[str, Any]] = []
    for split, listed in splits.items():
        located[split] = []
        for item in listed:
            clip = Clip(sample_key(item.id), classes.index(item.label), start=item.start, end=item.end)
            wav = root / params.audio_dir / f"{item.id}.wav"
            frame_dir = root / params.frames_dir / item.id
            clip.audio = str(wav) if wav.is_file() else None
            clip.frames = sorted(str(p) for p in frame_dir.glob("*.jpg")) if frame_dir.is_dir() else []
            if clip.audio is None or not clip.frames:
                video = _find_video(root / params.video_dir, item.id)
                if video is None:
                    clip.missing = (f"{wav if clip.audio is None else frame_dir}: not found, and no video "
                                    f"{root / params.video_dir / item.id}.* to extract it from")
                else:
                    jobs.append({"video": str(video), "split": split, "index": len(located[split]), "out": str(out),
                                 "audio": None if clip.audio else f"audio/{clip.key}.wav",
                                 "frames": None if clip.frames else f"frames/{clip.key}"})
            located[split].append(clip)
    if jobs:
        ctx.log(f"extracting media from {len(jobs)} video(s)")
        out.mkdir(parents=True, exist_ok=True)
        for job, found in zip(jobs, ctx.run_tasks(extract_media, jobs, at_once=1)):
            clip = located[job["split"]][job["index"]]
            write_shipped(out, found["shipped"])  # extracted on a node without this run's folder
            clip.audio = found["audio"] or clip.audio
            clip.frames = found["frames"] or clip.frames
            clip.missing = found["error"]
    return located


def extract_media(job: dict[str, Any], device: Any = None) -> dict[str, Any]:
    """Extract a clip's missing audio (WAV) and frames (1 fps JPEG) from its video, under the dataset
    folder `out` (paths returned relative to it, as the folder moves when the step finishes);
    errors are returned, and the files themselves (`shipped`) when this node lacks `out`."""
    from .media import MediaError, encode_wav, extract_audio, extract_frames

    found: dict[str, Any] = {"audio": None, "frames": [], "error": None}
    with node_folder(Path(job["out"])) as (out, shipped):
        try:
            if job["audio"]:
                samples, rate = extract_audio(job["video"])
                (out / job["audio"]).parent.mkdir(parents=True, exist_ok=True)
                (out / job["audio"]).write_bytes(encode_wav(samples, rate))
                found["audio"] = job["audio"]
            if job["frames"]:
                found["frames"] = [str(p.relative_to(out)) for p in extract_frames(job["video"], out / job["frames"])]
        except MediaError as exc:
            found["error"] = str(exc)
    return {**found, "shipped": shipped}


def sample_key(clip_id: str) -> str:
    """A webdataset-safe key (no dots or slashes, which split keys from field names)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", clip_id)


def _find_video(folder: Path, clip_id: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        if (folder / f"{clip_id}{suffix}").is_file():
            return folder / f"{clip_id}{suffix}"
    return None


def draw_validation(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """(train, validation): a seeded `fraction` of the training clips, by key hash."""
    from .shards import split_keys

    rest, picked = split_keys([c.key for c in clips], fraction, seed, salt="validation")
    chosen = set(picked)
    return [c for c in clips if c.key not in chosen], [c for c in clips if c.key in chosen]


def write_media_dataset(out: Path, splits: dict[str, list[Clip]], classes: list[str],
                        validation: dict[str, Any]) -> dict[str, Any]:
    """Write the index (`<split>.jsonl` per split, `dataset.json`); return the step's metrics."""
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = (json.dumps(dataclasses.asdict(clip)) for clip in splits.get(split, []))
        (out / f"{split}.jsonl").write_text("".join(f"{line}\n" for line in lines))
    info = {"format": "media", "num_classes": len(classes), "classes": classes,
            "modalities": {"audio": "audio", "visual": "frames"},
            "splits": {split: len(splits.get(split, [])) for split in SPLITS}, "validation": validation}
    (out / META_FILE).write_text(json.dumps(info, indent=2))
    missing = sum(c.missing is not None for clips in splits.values() for c in clips)
    return {**{f"{split}_clips": n for split, n in info["splits"].items()}, "clips_missing_media": missing,
            "num_classes": len(classes)}


def read_clips(dataset: Path, split: str) -> list[Clip]:
    """The clips of one split of a media dataset, with media paths made absolute."""
    clips = []
    for line in (dataset / f"{split}.jsonl").read_text().splitlines():
        clip = Clip(**json.loads(line))
        if clip.audio is not None:
            clip.audio = str(dataset / clip.audio)  # an absolute path stays as it is
        clip.frames = [str(dataset / f) for f in clip.frames]
        clips.append(clip)
    return clips


def read_media_dataset(ctx: StepContext, params: MediaReaderParams, parse: Any) -> dict[str, Any]:
    """Read the lists with `parse`, name the classes, locate media, draw validation when no list gives one,
    write the index; return the step's metrics."""
    root = Path(params.root).expanduser().resolve()  # the index records where the media are: from anywhere
    if not root.is_dir():
        raise InputDataError(f"{root}: dataset root folder not found (set params.root)")
    listed = {split: read_list(root / name, parse) for split, name in params.lists.items()}
    check_keys(listed)
    classes = class_names(listed, params.classes)
    splits = locate(ctx, params, root, listed, classes)
    if "val" in listed:
        validation: dict[str, Any] = {"source": "list"}
    else:
        splits["train"], splits["val"] = draw_validation(splits["train"], params.val_fraction, ctx.seed)
        validation = {"source": "drawn from train", "fraction": params.val_fraction, "seed": ctx.seed}
    metrics = write_media_dataset(ctx.output("dataset"), splits, classes, validation)
    ctx.log(", ".join(f"{k}={v}" for k, v in metrics.items()))
    return metrics
