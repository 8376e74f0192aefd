"""Audio presets and frame sampling/transforms against the reference shapes and rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mmflow.components.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AudioFeatures,
    AudioParams,
    FrameTransform,
    frame_indices,
)

from .media_trees import tone


@pytest.mark.parametrize("preset, shape", [("ogm_ge", [257, 188]), ("pmr", [257, 299]),
                                           ("kinetics_fbank", [128, 1024])])
def test_presets_give_the_reference_shapes(preset, shape):
    features = AudioFeatures(AudioParams(preset=preset))
    assert features.shape() == shape
    assert list(features(tone(2, 1.3, 44100, seed=0), 44100).shape) == shape  # resampled and tiled


def test_short_clips_are_tiled_and_long_ones_cropped_like_the_reference():
    rate = 8000
    params = AudioParams(preset=None, sample_rate=rate, duration=3.0, features="stft", n_fft=128, hop=64)
    clip = tone(1, 1.0, rate, seed=0)
    np.testing.assert_allclose(AudioFeatures(params)(clip, rate), AudioFeatures(params)(np.tile(clip, 3), rate))
    long = tone(1, 5.0, rate, seed=1)
    np.testing.assert_allclose(AudioFeatures(params)(long, rate), AudioFeatures(params)(long[:3 * rate], rate))


def test_stft_features_are_the_log_magnitude():
    rate = 8000
    params = AudioParams(preset=None, sample_rate=rate, duration=0.5, features="stft", n_fft=64, hop=32)
    clip = tone(0, 0.5, rate, seed=0)
    window = torch.hann_window(64)
    expected = torch.stft(torch.from_numpy(clip), 64, 32, window=window, return_complex=True).abs()
    np.testing.assert_allclose(AudioFeatures(params)(clip, rate), torch.log(expected + 1e-7).numpy(), atol=1e-4)


def test_frames_param_pads_with_zeros_or_crops():
    base = dict(preset=None, sample_rate=8000, duration=0.5, features="logmel", n_fft=128, hop=64, n_mels=16)
    natural = AudioFeatures(AudioParams(**base)).shape()[1]
    padded = AudioFeatures(AudioParams(**base, frames=natural + 5))(tone(0, 0.5, 8000, 0), 8000)
    assert padded.shape == (16, natural + 5) and not padded[:, natural:].any()
    assert AudioFeatures(AudioParams(**base, frames=3)).shape() == [16, 3]


def test_a_preset_can_be_overridden_and_incomplete_settings_are_refused():
    assert AudioFeatures(AudioParams(preset="ogm_ge", hop=512)).shape() == [257, 1 + 66150 // 512]
    with pytest.raises(ValidationError, match="audio needs sample_rate"):
        AudioParams(preset=None)


def test_frame_indices_take_one_frame_per_segment():
    assert frame_indices(10, 3, train=False) == [1, 4, 7]  # segments [0,3], [3,6], [6,9]: middles
    assert frame_indices(2, 4, train=False) == [0, 0, 1, 1]  # fewer frames than wanted: repeats
    torch.manual_seed(0)
    for _ in range(50):
        first, second = frame_indices(10, 2, train=True)
        assert 0 <= first <= 4 and 5 <= second <= 9


def test_frame_transform_crops_the_whole_clip_alike_and_normalises():
    frames = torch.randint(0, 256, (3, 3, 40, 60), dtype=torch.uint8)
    frames[1] = frames[0]
    torch.manual_seed(0)
    out = FrameTransform(32, train=True)(frames)
    assert out.shape == (3, 3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[1])  # same crop and flip for every frame of the clip
    white = FrameTransform(16, train=False)(torch.full((1, 3, 20, 20), 255, dtype=torch.uint8))
    expected = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(white[0, :, 0, 0], expected, rtol=1e-5)
