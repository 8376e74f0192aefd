"""AVEL localization models: shapes, attention, DMRN algebra."""

from __future__ import annotations

import pytest
import torch

from mmflow.components.models.build import build_classifier
from mmflow.components.models.fusion import DMRNFusion
from mmflow.components.models.localization import AudioGuidedAttention


def architecture(fusion: str, heads: str = "fusion") -> dict:
    return {"task": "localization", "modalities": {"audio": [6, 8], "visual": [6, 2, 2, 5]}, "num_classes": 4,
            "hidden": 3, "attention_dim": 7, "fusion": {"name": fusion, **({"blocks": 2} if fusion == "dmrn" else {})},
            "modality_heads": heads}


@pytest.mark.parametrize("fusion", ["concat", "dmrn"])
def test_segments_are_the_samples_of_the_output(fusion):
    model = build_classifier(architecture(fusion))
    out = model({"audio": torch.randn(5, 6, 8), "visual": torch.randn(5, 6, 2, 2, 5)})
    assert out.logits.shape == (30, 4)  # 5 videos x 6 segments
    assert {m: z.shape for m, z in out.embeddings.items()} == {"audio": (30, 6), "visual": (30, 6)}
    assert set(out.modality_logits) == ({"audio", "visual"} if fusion == "concat" else set())
    assert fusion == "concat" or len(model.fusion.blocks) == 2  # the fusion's own params
    assert set(build_classifier(architecture(fusion, "unsplit"))(
        {"audio": torch.randn(1, 6, 8), "visual": torch.randn(1, 6, 2, 2, 5)}).modality_logits) == {"audio", "visual"}


def test_a_segment_sees_its_own_audio_and_the_whole_sequence_through_the_lstm():
    model = build_classifier(architecture("concat")).eval()
    audio, visual = torch.randn(1, 6, 8), torch.randn(1, 6, 2, 2, 5)
    changed = audio.clone()
    changed[0, 5] += 1  # the last segment's audio
    first = model({"audio": audio, "visual": visual}).logits
    second = model({"audio": changed, "visual": visual}).logits
    assert not torch.allclose(first[0], second[0])  # bidirectional: segment 0 hears the future too


def test_attention_weights_sum_to_one_over_regions_and_weight_the_regions():
    attention = AudioGuidedAttention(audio_dim=3, visual_dim=4, hidden=5)
    regions, audio = torch.randn(2, 6, 9, 4), torch.randn(2, 6, 3)
    attended, weights = attention(regions, audio)
    assert weights.shape == (2, 6, 9) and torch.allclose(weights.sum(-1), torch.ones(2, 6))
    assert torch.allclose(attended, torch.einsum("btr,btrd->btd", weights, regions))
    hand = torch.softmax(attention.score(torch.tanh(attention.visual(regions[0, 0]) + attention.audio(audio[0, 0])))
                         .squeeze(-1), 0)
    assert torch.allclose(weights[0, 0], hand)


def test_dmrn_block_merges_half_the_sum_of_both_transforms_into_both_streams():
    fusion = DMRNFusion({"a": 2, "v": 2}, num_classes=3, blocks=1)
    block = fusion.blocks[0]
    for m, scale in (("a", 1.0), ("v", 2.0)):  # U_a(x) = tanh(x) and U_v(x) = 2 tanh(x)
        first, _, last = block[m]
        with torch.no_grad():
            first.weight.copy_(torch.eye(2))
            first.bias.zero_()
            last.weight.copy_(scale * torch.eye(2))
            last.bias.zero_()
    a, v = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, 0.3]])
    merged = 0.5 * (torch.tanh(a) + 2 * torch.tanh(v))
    expected = 0.5 * (torch.tanh(a + merged) + torch.tanh(v + merged))
    assert torch.allclose(fusion.merge({"a": a, "v": v}), expected)
    logits, per_modality = fusion({"a": a, "v": v})
    assert torch.allclose(logits, fusion.fc(expected)) and per_modality == {}


def test_localization_needs_one_sequence_and_one_region_grid():
    with pytest.raises(ValueError, match="one T x D"):
        build_classifier({**architecture("concat"), "modalities": {"a": [6, 8], "b": [6, 3]}})
