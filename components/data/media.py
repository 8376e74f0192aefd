"""Raw media in and out: WAV with soundfile, JPEG with torchvision, video with PyAV.

Every failure is a `MediaError` naming the file, so a reader or the shard writer can fail
with that name or skip the sample and count it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch


class MediaError(Exception):
    """A media file that is missing or cannot be decoded; the message starts with its path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {reason}")


def read_audio(source: str | Path | bytes, name: str | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the sample rate of a WAV (or any format libsndfile reads)."""
    import soundfile

    label = name or str(source)
    handle: str | BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        samples, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's errors say what is wrong but not which file
        raise MediaError(label, f"unreadable audio ({_first_line(exc)})") from None
    if samples.shape[0] == 0:
        raise MediaError(label, "audio has no samples")
    return samples.mean(axis=1), int(rate)


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV bytes of mono float samples."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1, 1), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def decode_jpeg(data: bytes, name: str) -> torch.Tensor:
    """An RGB uint8 image, 3 x H x W."""
    from torchvision.io import ImageReadMode, decode_jpeg as _decode

    try:
        return _decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except Exception as exc:
        raise MediaError(name, f"corrupt or unreadable JPEG ({_first_line(exc)})") from None


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, or a MediaError naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise MediaError(path, "file not found") from None
    except OSError as exc:
        raise MediaError(path, f"cannot read ({exc.strerror})") from None


def extract_frames(video: str | Path, out_dir: Path, fps: float = 1.0, quality: int = 95) -> list[Path]:
    """Save `fps` frames per second of `video` as `out_dir/NNNNNN.jpg` (the first frame at or after each tick)."""
    import av

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if frame.time is None or frame.time + 1e-6 < len(paths) / fps:
                    continue
                path = out_dir / f"{len(paths):06d}.jpg"
                frame.to_image().save(path, quality=quality)
                paths.append(path)
    except (av.FFmpegError, IndexError) as exc:
        raise MediaError(video, f"cannot decode video frames ({_first_line(exc)})") from None
    if not paths:
        raise MediaError(video, "video has no frames")
    return paths


def extract_audio(video: str | Path) -> tuple[np.ndarray, int]:
    """The first audio stream of a video as mono float32 samples and its sample rate."""
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(video)) as container:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                chunks += [f.to_ndarray().reshape(-1) for f in mono.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in mono.resample(None)]  # flush
    except (av.FFmpegError, IndexError) as exc:
        raise MediaError(video, f"cannot decode the audio stream ({_first_line(exc)})") from None
    if not chunks:
        raise MediaError(video, "video has no audio samples")
    return np.concatenate(chunks).astype(np.float32), int(rate)


def _first_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]
