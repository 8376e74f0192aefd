"""The CG-MNIST convolutional encoder against the official PMR code's `convnet`."""

from __future__ import annotations

import torch

from mmflow.components.models.build import build_encoder


def test_cnn_has_the_official_layers_and_map_sizes():
    gray, color = build_encoder("cnn", [1, 28, 28], [], 512), build_encoder("cnn", [3, 28, 28], [], 512)
    # bn0 2C, conv1 C*32*25+32, conv2 9,248, conv3 18,496, conv4 36,928, fc 33,280 (counted by hand)
    assert sum(p.numel() for p in gray.parameters()) == 98_786
    assert sum(p.numel() for p in color.parameters()) == 100_390
    x = color.prepare(torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8))
    sizes = []
    for stage in color.stages:
        x = stage(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(32, 14, 14), (32, 14, 14), (64, 7, 7), (64, 7, 7)]
    assert color.embed(x).shape == (2, 512)


def test_cnn_normalizes_its_input_per_channel():
    """The input batch norm: in training, a per-channel affine change of the pixels changes nothing."""
    torch.manual_seed(0)
    encoder = build_encoder("cnn", [3, 28, 28], [], 16).train()
    images = torch.rand(8, 3, 28, 28)
    rescaled = images * torch.tensor([4.0, 0.5, 2.0])[:, None, None] + 0.3
    torch.testing.assert_close(encoder(rescaled), encoder(images), atol=1e-4, rtol=1e-4)


def test_cnn_is_initialized_as_the_official_code():
    """Convolutions kaiming-normal over fan-out, the Linear xavier-normal with a zero bias."""
    torch.manual_seed(0)
    encoder = build_encoder("cnn", [3, 28, 28], [], 512)
    conv4 = encoder.stages[3][0]
    assert abs(conv4.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.004  # fan-out 64 x 3 x 3
    assert abs(encoder.fc.weight.std().item() - (2 / (64 + 512)) ** 0.5) < 0.003
    assert not encoder.fc.bias.any()
