"""Tiny datasets in the real CREMA-D, AVE and Kinetics-Sounds layouts, written by the tests.

Each class has its own tone (audio) and its own frame brightness (visual), so models can learn
them; WAVs are written with soundfile, JPEG frames with PIL, videos (mpeg4 + AAC) with PyAV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

EMOTIONS = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]


def tone(label: int, seconds: float, rate: int, seed: int) -> np.ndarray:
    """A class-specific tone plus noise."""
    t = np.arange(round(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.05, t.size)
    return (0.4 * np.sin(2 * np.pi * (300 + 150 * label) * t) + noise).astype(np.float32)


def frame(label: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """An RGB frame whose brightness follows the class, with noise."""
    rng = np.random.default_rng(seed)
    base = 30 + 35 * label
    return np.clip(rng.normal(base, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)


def write_wav(path: Path, label: int, seconds: float, rate: int = 8000, seed: int = 0) -> Path:
    """A mono 16-bit WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone(label, seconds, rate, seed), rate, subtype="PCM_16")
    return path


def write_frames(folder: Path, label: int, count: int, size: tuple[int, int] = (40, 30), seed: int = 0) -> list[Path]:
    """`count` JPEG frames named 000001.jpg, ... in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i + 1:06d}.jpg"
        Image.fromarray(frame(label, size, seed * 100 + i)).save(path, quality=90)
        paths.append(path)
    return paths


def write_video(path: Path, label: int, seconds: float, fps: int = 4, size: tuple[int, int] = (32, 24),
                rate: int = 16000, seed: int = 0) -> Path:
    """An mp4 (mpeg4 video + AAC audio) made from class frames and a class tone."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i in range(round(seconds * fps)):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame(label, size, seed + i), format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        samples = tone(label, seconds, rate, seed)
        for start in range(0, samples.size, 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = rate, start
            for packet in audio.encode(chunk):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    return path


def cremad_tree(root: Path, train_per_class: int = 3, test_per_class: int = 1, seconds: float = 1.5) -> Path:
    """CREMA-D layout: train.csv / test.csv, AudioWAV/<clip>.wav, Image-01-FPS/<clip>/*.jpg."""
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        lines = []
        for label, emotion in enumerate(EMOTIONS):
            for i in range(per_class):
                clip = f"{1001 + i}_{split.upper()}_{emotion}_XX"
                seed = hash((split, label, i)) % 10_000
                write_wav(root / "AudioWAV" / f"{clip}.wav", label, seconds, seed=seed)
                write_frames(root / "Image-01-FPS" / clip, label, count=2 + i % 2, seed=seed)
                lines.append(f"{clip},{emotion}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def ave_tree(root: Path, categories: tuple[str, ...] = ("Church bell", "Dog", "Truck"), per_split: int = 2,
             seconds: int = 4) -> Path:
    """AVE layout: trainSet/valSet/testSet.txt (Category&videoID&quality&start&end) and AVE/<id>.mp4 videos."""
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        lines = []
        for label, category in enumerate(categories):
            for i in range(per_split):
                video = f"{split}{label}{i}-xY_{i}"
                write_video(root / "AVE" / f"{video}.mp4", label, seconds, seed=label * 10 + i)
                start = i % 2
                lines.append(f"{category}&{video}&good&{start}&{start + 2}")
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def kinetics_tree(root: Path, labels: tuple[str, ...] = ("playing bagpipes", "dog barking"),
                  per_class: int = 3, seconds: float = 2.0) -> Path:
    """Kinetics-Sounds layout: train.txt / test.txt (id,10,label), audio/<id>.wav, Image-01-FPS/<id>/*.jpg."""
    for split, count in (("train", per_class), ("test", 1)):
        lines = []
        for label, name in enumerate(labels):
            for i in range(count):
                clip = f"yt{split}{label}{i}_{i * 10:06d}_{i * 10 + 10:06d}"
                write_wav(root / "audio" / f"{clip}.wav", label, seconds, rate=16000, seed=label * 7 + i)
                write_frames(root / "Image-01-FPS" / clip, label, count=3, seed=label * 7 + i)
                lines.append(f"{clip},10,{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root
