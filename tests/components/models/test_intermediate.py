"""MMTM and CentralNet against their definitions, on small staged CNN encoders."""

from __future__ import annotations

import pytest
import torch

from mmflow.components.models.encoders import ConvEncoder, MLPEncoder
from mmflow.components.models.intermediate import MMTM, CentralNetClassifier, MMTMClassifier


def encoders() -> dict[str, ConvEncoder]:
    torch.manual_seed(0)
    return {"gray": ConvEncoder([1, 8, 8], out_dim=6), "color": ConvEncoder([3, 8, 8], out_dim=6)}


def inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"gray": torch.rand(2, 1, 8, 8), "color": torch.rand(2, 3, 8, 8)}


def test_mmtm_rescales_each_map_by_twice_the_sigmoid_of_a_joint_excitation():
    staged = encoders()
    block = MMTM({"gray": 2, "color": 3}, ratio=1)
    maps = {"gray": torch.rand(2, 2, 4, 4), "color": torch.rand(2, 3, 4, 4)}
    out = block(maps, torch.nn.ModuleDict(staged))
    squeezed = torch.cat([maps["gray"].mean(dim=(2, 3)), maps["color"].mean(dim=(2, 3))], dim=1)  # B x 5
    joint = torch.relu(squeezed @ block.squeeze[0].weight.T + block.squeeze[0].bias)
    for m in maps:
        scale = 2 * torch.sigmoid(joint @ block.excite[m].weight.T + block.excite[m].bias)
        torch.testing.assert_close(out[m], maps[m] * scale[:, :, None, None])
    assert block.squeeze[0].out_features == 5 and MMTM({"a": 8, "b": 8}).squeeze[0].out_features == 4
    tiny = MMTM({"a": 1, "b": 2})  # 3 // 4 = 0: still one unit
    assert tiny.squeeze[0].out_features == 1 and tiny.excite["b"].in_features == 1


def test_mmtm_sits_after_the_last_stages_and_its_excitation_trains():
    model = MMTMClassifier(encoders(), num_classes=3, mmtm_stages=2)
    assert model.mmtm_at == [2, 3] and len(model.mmtm) == 2
    out = model(inputs())
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])).backward()
    for block in model.mmtm:  # an identity in place of the excitation would leave these without gradient
        assert block.squeeze[0].weight.grad.abs().sum() > 0
        assert all(e.weight.grad.abs().sum() > 0 for e in block.excite.values())
    torch.testing.assert_close(out.modality_logits["gray"] + out.modality_logits["color"], out.logits)


def test_mmtm_changes_what_the_encoders_see():
    staged = encoders()
    model = MMTMClassifier(staged, num_classes=3, mmtm_stages=1)
    x = inputs()
    plain = {m: staged[m](x[m]) for m in x}  # the encoders on their own
    fused = model(x).embeddings
    assert not torch.allclose(fused["gray"], plain["gray"]) and not torch.allclose(fused["color"], plain["color"])


def test_centralnet_mixes_the_modality_maps_of_every_stage():
    model = CentralNetClassifier(encoders(), num_classes=3)
    out = model(inputs())
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])).backward()
    # every stage's weight on every modality's map reaches the fused logits, and the central stream's own
    assert (model.fusion.alpha_modality.grad != 0).all()
    assert (model.fusion.alpha_central.grad[1:] != 0).all()
    assert out.modality_logits == {}


def test_centralnet_stage_mix_is_the_weighted_sum_of_maps_and_the_central_stage():
    stream = CentralNetClassifier(encoders(), num_classes=3).fusion
    with torch.no_grad():
        stream.alpha_modality.copy_(torch.tensor([[0.5, 2.0], [1.5, -1.0], [1.0, 1.0], [1.0, 1.0]]))
        stream.alpha_central.copy_(torch.tensor([9.0, 3.0, 1.0, 1.0]))
    maps = [torch.rand(2, 32, 4, 4), torch.rand(2, 32, 8, 8)]  # the second is pooled to the first's size
    first = stream.mix(0, maps, None)
    torch.testing.assert_close(first, 0.5 * maps[0] + 2.0 * torch.nn.functional.adaptive_avg_pool2d(maps[1], (4, 4)))
    second_maps = [torch.rand(2, 32, 4, 4), torch.rand(2, 32, 4, 4)]  # stage 1 keeps the size
    second = stream.mix(1, second_maps, first)
    torch.testing.assert_close(second, 1.5 * second_maps[0] - second_maps[1] + 3.0 * stream.stages[0](first))


def test_intermediate_fusions_need_staged_encoders():
    mlp = {"a": MLPEncoder([4], [], 3), "b": MLPEncoder([4], [], 3)}
    for build, name in ((MMTMClassifier, "mmtm"), (CentralNetClassifier, "centralnet")):
        with pytest.raises(ValueError, match=f"fusion '{name}' needs encoders that expose their stages"):
            build(mlp, num_classes=2)


def test_mmtm_acts_after_the_last_three_stages_unless_told():
    assert MMTMClassifier(encoders(), num_classes=3).mmtm_at == [1, 2, 3]


def test_the_central_stream_has_its_own_freshly_initialized_stages():
    staged = encoders()
    stream = CentralNetClassifier(staged, num_classes=3).fusion
    encoder = staged["gray"]
    ours = [p for module in (*stream.stages, stream.fc) for p in module.parameters()]
    theirs = [p for module in (*encoder.stages[1:], encoder.fc) for p in module.parameters()]
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    for mine, template in zip(ours, theirs):
        assert mine.data_ptr() != template.data_ptr() and not torch.equal(mine, template)


def test_mmtm_takes_its_ratio_and_stages_from_the_workflow():
    from mmflow.components.models.build import build_classifier

    def mmtm(**params):
        return build_classifier({"modalities": {"gray": [1, 8, 8], "color": [3, 8, 8]}, "num_classes": 3,
                                 "encoder": "cnn", "hidden": [], "embedding_dim": 6,
                                 "fusion": {"name": "mmtm", **params}})

    model = mmtm(ratio=2, stages=2)
    channels = sum(e.stages[-1][0].out_channels for e in model.encoders.values())
    assert model.mmtm_at == [2, 3] and model.mmtm[-1].squeeze[0].out_features == channels // 2
    assert mmtm().mmtm[-1].squeeze[0].out_features == channels // 4
    with pytest.raises(ValueError, match="^fusion mmtm: stages 5, but the encoders have 4 stages$"):
        mmtm(stages=5)
