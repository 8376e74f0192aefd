"""Audio and visual preprocessing with torchaudio and torchvision, with the reference presets.

Audio: mono samples -> resample -> fixed duration (tiled when short, cropped when long, clipped
to [-1, 1], as the reference code) -> log STFT magnitude, log-mel or Kaldi fbank -> F x T.
Visual: `num_frames` frames, one per equal segment of the clip (random within it in training,
its middle in evaluation) -> RandomResizedCrop + horizontal flip in training, Resize in
evaluation, the same crop for every frame of a clip -> ImageNet normalisation -> T x 3 x S x S.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal
from pydantic import Field, model_validator

from mmflow.engine import Params

if TYPE_CHECKING:
    import numpy as np

AUDIO_PRESETS: dict[str, dict[str, Any]] = {
    # OGM-GE / PMR CREMA-D: 3 s at 22,050 Hz, n_fft 512, hop 353 -> 257 x 188
    "ogm_ge": {"sample_rate": 22050, "duration": 3.0, "features": "stft", "n_fft": 512, "hop": 353},
    # PMR's longer window: the same STFT over 299 frames -> 257 x 299
    "pmr": {"sample_rate": 22050, "duration": 4.77, "features": "stft", "n_fft": 512, "hop": 353, "frames": 299},
    # Kinetics-Sounds: 128-bin Kaldi fbank, 25 ms window, 10 ms shift, 1,024 frames -> 128 x 1024
    "kinetics_fbank": {"sample_rate": 16000, "duration": 10.0, "features": "fbank", "n_fft": 400, "hop": 160,
                       "n_mels": 128, "frames": 1024},
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class AudioParams(Params):
    """Audio features: a preset, and any field set here overrides the preset's value."""

    preset: Literal["ogm_ge", "pmr", "kinetics_fbank"] | None = Field(
        "ogm_ge", description="ogm_ge (257 x 188), pmr (257 x 299), kinetics_fbank (128 x 1024); null: all fields below")
    sample_rate: int | None = Field(None, ge=1000, description="resample to this rate (Hz)")
    duration: float | None = Field(None, gt=0, description="seconds: shorter clips are tiled, longer ones cropped")
    features: Literal["stft", "logmel", "fbank"] | None = Field(
        None, description="stft: log magnitude; logmel: log mel power; fbank: Kaldi log-mel filterbank")
    n_fft: int | None = Field(None, ge=16, description="FFT size (fbank: window length in samples)")
    hop: int | None = Field(None, ge=1, description="hop between frames in samples")
    n_mels: int | None = Field(None, ge=1, description="mel bins (logmel, fbank)")
    frames: int | None = Field(None, ge=1, description="crop or zero-pad the time axis to this many frames")

    @model_validator(mode="after")
    def _complete(self) -> "AudioParams":
        settings = self.settings()
        missing = [k for k in ("sample_rate", "duration", "features", "n_fft", "hop") if settings.get(k) is None]
        if settings.get("features") in ("logmel", "fbank") and settings.get("n_mels") is None:
            missing.append("n_mels")
        if missing:
            raise ValueError(f"audio needs {', '.join(missing)} (or a preset that sets them)")
        return self

    def settings(self) -> dict[str, Any]:
        """The preset's values with this model's explicit fields on top."""
        own = {k: v for k, v in self.model_dump().items() if k != "preset" and v is not None}
        return {**AUDIO_PRESETS.get(self.preset or "", {}), **own}


class VisualParams(Params):
    """Frame sampling and image sizes."""

    num_frames: int = Field(1, ge=1, le=64, description="frames per clip, one per equal segment of the clip")
    size: int = Field(224, ge=8, description="output frame size (crop in training, resize in evaluation)")
    store_size: int = Field(256, ge=8, description="store: arrays keeps frames resized to this square size")

    @model_validator(mode="after")
    def _sizes(self) -> "VisualParams":
        if self.store_size < self.size:
            raise ValueError(f"store_size {self.store_size} is smaller than size {self.size}")
        return self


class AudioFeatures:
    """Mono samples at any rate -> float32 F x T features."""

    def __init__(self, params: AudioParams | dict[str, Any]) -> None:
        self.settings = (params if isinstance(params, AudioParams) else AudioParams(**params)).settings()
        self.samples = round(self.settings["duration"] * self.settings["sample_rate"])
        self._transform = _feature_transform(**{k: self.settings.get(k) for k in
                                                ("features", "sample_rate", "n_fft", "hop", "n_mels")})

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        import numpy as np
        import torch
        import torchaudio

        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        if rate != self.settings["sample_rate"]:
            wave = torchaudio.functional.resample(wave, rate, self.settings["sample_rate"])
        wave = wave.repeat(-(-self.samples // wave.numel()))[: self.samples].clamp(-1, 1)
        features = self._transform(wave)
        frames = self.settings.get("frames")
        if frames is not None:
            features = torch.nn.functional.pad(features[:, :frames], (0, max(0, frames - features.shape[1])))
        return features.numpy()

    def shape(self) -> list[int]:
        """F x T of every output."""
        import numpy as np

        return list(self(np.zeros(self.samples, dtype=np.float32), self.settings["sample_rate"]).shape)


@functools.lru_cache(maxsize=8)
def _feature_transform(features: str, sample_rate: int, n_fft: int, hop: int, n_mels: int | None):
    import torch
    import torchaudio

    if features == "stft":
        spectrogram = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop, power=1)
        return lambda wave: torch.log(spectrogram(wave) + 1e-7)
    if features == "logmel":
        mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        return lambda wave: torch.log(mel(wave) + 1e-6)
    return lambda wave: torchaudio.compliance.kaldi.fbank(
        wave[None], sample_frequency=sample_rate, num_mel_bins=n_mels, frame_length=1000 * n_fft / sample_rate,
        frame_shift=1000 * hop / sample_rate, window_type="hanning", htk_compat=True, dither=0.0).T


def frame_indices(count: int, num_frames: int, train: bool) -> list[int]:
    """One frame per equal segment of `count` frames: random within it (train) or its middle (eval)."""
    import numpy as np
    import torch

    edges = np.linspace(0, count, num_frames + 1)
    picked = []
    for low, high in zip(edges[:-1], edges[1:]):
        first, last = int(low), max(int(low), int(np.ceil(high)) - 1)
        picked.append(int(torch.randint(first, last + 1, ()).item()) if train else (first + last) // 2)
    return [min(i, count - 1) for i in picked]


class FrameTransform:
    """uint8 T x 3 x H x W frames -> normalised float32 T x 3 x size x size (one crop for the whole clip)."""

    def __init__(self, size: int, train: bool) -> None:
        import torch
        from torchvision.transforms import v2

        geometry = ([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()] if train
                    else [v2.Resize((size, size), antialias=True)])
        self._transform = v2.Compose([*geometry, v2.ToDtype(torch.float32, scale=True),
                                      v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __call__(self, frames: Any) -> np.ndarray:
        return self._transform(frames).numpy()


def resize_frames(frames: Any, size: int) -> np.ndarray:
    """uint8 frames resized to size x size (what `store: arrays` keeps)."""
    from torchvision.transforms import v2

    return v2.functional.resize(frames, [size, size], antialias=True).numpy()
