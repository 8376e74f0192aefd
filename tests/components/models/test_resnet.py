"""The ResNet-18 audio and visual encoders, and intermediate fusions through them."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.resnet import BasicBlock

from mmflow.components.models.build import build_classifier, build_encoder
from mmflow.components.models.resnet import AudioResNet18, FramesResNet18


def architecture(fusion: str) -> dict:
    return {"modalities": {"audio": [33, 40], "visual": [2, 3, 32, 32]}, "num_classes": 4, "encoder": "resnet18",
            "hidden": [], "embedding_dim": 512, "fusion": fusion, "modality_heads": "fusion"}


def test_encoders_are_torchvision_resnet18_with_a_1_channel_stem_for_audio():
    audio = build_encoder("resnet18", [33, 40], [], 512)
    visual = build_encoder("resnet18", [2, 3, 32, 32], [], 512)
    assert isinstance(audio, AudioResNet18) and isinstance(visual, FramesResNet18)
    assert audio.stages[0][0].in_channels == 1 and visual.stages[0][0].in_channels == 3
    assert isinstance(audio.stages[3][0], BasicBlock) and len(audio.stages) == 4
    assert sum(p.numel() for p in visual.parameters()) == 11_176_512  # ResNet-18 without its fc
    assert audio(torch.randn(5, 33, 40)).shape == (5, 512)
    assert visual(torch.randn(5, 2, 3, 32, 32)).shape == (5, 512)
    with pytest.raises(ValueError, match="spectrograms or T x 3 x H x W frames"):
        build_encoder("resnet18", [3, 32, 32], [], 512)


def test_frames_are_folded_into_the_batch_and_pooled_over_time_and_space():
    encoder = FramesResNet18(num_frames=3).eval()
    single = FramesResNet18(num_frames=1).eval()  # the same weights, one frame at a time
    single.load_state_dict(encoder.state_dict())
    clips = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        per_frame = torch.stack([single(clips[:, t:t + 1]) for t in range(3)]).mean(0)
        torch.testing.assert_close(encoder(clips), per_frame, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fusion", ["concat", "film", "mmtm", "centralnet"])
def test_audio_visual_classifiers_train_a_step_with_every_kind_of_fusion(fusion):
    torch.manual_seed(0)
    model = build_classifier(architecture(fusion))
    inputs = {"audio": torch.randn(4, 33, 40), "visual": torch.randn(4, 2, 3, 32, 32)}
    out = model(inputs)
    assert out.logits.shape == (4, 4) and set(out.embeddings) == {"audio", "visual"}
    assert all(z.shape == (4, 512) for z in out.embeddings.values())
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    stems = [model.encoders[m].stages[0][0].weight.grad for m in ("audio", "visual")]
    assert all(g is not None and g.abs().sum() > 0 for g in stems)  # both encoders learn


def test_mmtm_excites_every_frame_of_a_clip_alike():
    encoder = FramesResNet18(num_frames=2)
    maps = torch.ones(6, 4, 3, 3)  # 3 clips x 2 frames
    weights = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    excited = encoder.excite(maps, weights)
    assert torch.equal(excited[0], excited[1]) and excited[2, 0, 0, 0] == 5
    assert torch.equal(encoder.squeeze(excited), weights)
