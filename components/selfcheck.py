"""`mmflow doctor`'s checks of the media stack: what the real audio-visual readers need must work here."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mmflow.engine import self_check


@self_check("audio decoding")
def audio_decoding() -> str:
    """A WAV round trip through soundfile, then torchaudio's native operators and a log-mel spectrogram."""
    import numpy as np
    import soundfile
    import torch
    import torchaudio  # raises when its native library does not match torch

    from .data.media import encode_wav, read_audio
    from .data.preprocess import AudioFeatures

    rate = 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate // 10) / rate).astype(np.float32)
    samples, read_rate = read_audio(encode_wav(tone, rate), "a generated tone")
    if read_rate != rate or np.abs(samples - tone).max() > 1e-3:
        raise RuntimeError("a WAV written and read back by soundfile differs from the original")
    torch.ops._torchaudio.is_align_available()  # a call into libtorchaudio itself
    features = AudioFeatures({"preset": "ogm_ge", "duration": 0.1})(samples, rate)
    if not np.isfinite(features).all():
        raise RuntimeError("the audio features of a tone are not finite")
    return f"soundfile {soundfile.__version__} (libsndfile {soundfile.__libsndfile_version__}), torchaudio {torchaudio.__version__}"


@self_check("video decoding")
def video_decoding() -> str:
    """Encode two seconds of video with sound with PyAV, then extract its frames and audio as the readers do."""
    import av
    import numpy as np

    from .data.media import extract_audio, extract_frames

    with tempfile.TemporaryDirectory(prefix="mmflow-doctor-") as tmp:
        video = Path(tmp) / "check.mp4"
        _write_video(video, seconds=2, fps=4, rate=8000)
        frames = extract_frames(video, Path(tmp) / "frames", fps=1.0)
        samples, rate = extract_audio(video)
    if len(frames) != 2 or rate != 8000 or not 1.5 * rate < samples.size < 2.5 * rate or not np.isfinite(samples).all():
        raise RuntimeError(f"a 2 s video gave {len(frames)} frame(s) at 1 fps and {samples.size} samples at {rate} Hz")
    return f"PyAV {av.__version__} (FFmpeg {'.'.join(map(str, av.library_versions['libavformat']))} libavformat)"


def _write_video(path: Path, seconds: int, fps: int, rate: int) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        picture = container.add_stream("mpeg4", rate=fps)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        sound = container.add_stream("aac", rate=rate, layout="mono")
        for i in range(seconds * fps):
            image = np.full((32, 32, 3), 40 * i % 256, dtype=np.uint8)
            container.mux(picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(seconds * rate) / rate)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = rate
        container.mux(sound.encode(frame))
        container.mux(picture.encode(None))
        container.mux(sound.encode(None))
