"""Every method trains one epoch with every fusion (inline), and OGM-GE's modulation is exact."""

from __future__ import annotations

import math

import pytest
import torch

from mmflow.components.balance.base import ClassSums, TrainingContext, build_method
from mmflow.components.balance.methods.ogm_ge import OGMGEParams, ogm_coefficients
from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
from mmflow.components.data.shards import write_shards
from mmflow.components.models.build import build_classifier
from mmflow.components.models.fusions import FUSIONS
from mmflow.components.tasks.training_params import TrainClassifierParams
from mmflow.components.tasks.training_loop import train_worker
from mmflow.engine import InlineExecutor, Resources, TrainingJob

METHODS = [{"name": "naive"}, {"name": "unimodal", "modality": "b"}, {"name": "pmr", "alpha": 2, "mu": 0.1, "per_epochs": 1},
           {"name": "ogm_ge", "alpha": 0.5}, {"name": "modality_dropout", "p": 0.5}, {"name": "aux_loss", "weights": {"a": 0.5}},
           {"name": "gblend", "mode": "online", "warmup_super_epoch": 1, "super_epoch": 1, "holdout": 0.25},
           {"name": "mmpareto"}, {"name": "agm", "alpha": 2.0}, {"name": "mmcosine"},
           {"name": "relearning", "reinit_epoch": 1, "holdout": 0.25}, {"name": "inforeg"},
           {"name": "opm", "warmup_epochs": 1, "p_exe": 1.0}, {"name": "mla"}, {"name": "umt"}, {"name": "cml"},
           {"name": "reconboost", "boost_epochs": 1, "correction_epochs": 1}]
REFUSED = {("gblend", "mmtm"): "mmtm couples the modality streams", ("mmpareto", "mmtm"): "mmtm couples the encoders",
           **{("mmcosine", f): f"{f} are no linear layer" for f in ("film", "gated", "centralnet")},
           **{("opm", f): f"{f} does not split" for f in ("film", "gated", "mmtm", "centralnet")},
           **{("mla", f): "use fusion: shared" for f in ("concat", "sum", "film", "gated", "mmtm", "centralnet")},
           **{("cml", f): "use a late fusion" for f in ("mmtm", "centralnet")},
           **{("reconboost", f): "use fusion shared \\(combine: sum\\), sum or concat"
              for f in ("shared", "film", "gated", "mmtm", "centralnet")}}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    def make(shapes: dict[str, tuple], name: str):
        root = tmp_path_factory.mktemp(name)
        gen = torch.Generator().manual_seed(0)
        labels = torch.arange(64) % 4
        data = {"label": labels, **{m: torch.randn(64, *shape, generator=gen) + labels.view(-1, *[1] * len(shape)) * 0.5
                                    for m, shape in shapes.items()}}
        save_tensor_dataset(root / "ds", {"train": data}, num_classes=4)
        write_shards(iter_samples(root / "ds", "train"), root / "shards", 16, num_classes=4)
        return root / "shards"
    return make


def train(shards_dir, tmp_path, teachers=(), **params):
    config = {"params": TrainClassifierParams.model_validate({"epochs": 2, "batch_size": 16, **params}).model_dump(),
              "train": str(shards_dir), "teachers": [str(t) for t in teachers]}
    return InlineExecutor().train(train_worker, config, TrainingJob(Resources(), tmp_path, log=lambda _: None))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Uni-modal models of a and b trained on the data with the student's encoder settings (for umt)."""
    made = {}

    def make(data, model: dict):
        if str(data) not in made:
            made[str(data)] = [train(data, tmp_path_factory.mktemp("teacher"), method={"name": "unimodal", "modality": m},
                                     **model).checkpoint for m in "ab"]
        return made[str(data)]
    return make


@pytest.mark.parametrize("fusion", [c.name for c in FUSIONS.choices()])
@pytest.mark.parametrize("method", METHODS, ids=[m["name"] for m in METHODS])
def test_every_method_trains_with_every_fusion(shards, teachers, tmp_path, method, fusion):
    capabilities = FUSIONS.get(fusion).capabilities
    if capabilities["stage"] == "intermediate":  # they reach inside staged encoders: small images
        data, model = shards({"a": (1, 8, 8), "b": (3, 8, 8)}, "images"), {"encoder": "cnn", "embedding_dim": 16}
    else:
        data, model = shards({"a": (5,), "b": (3,)}, "vectors"), {"hidden": [8], "embedding_dim": 6}
    if (method["name"], fusion) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[method["name"], fusion]):
            train(data, tmp_path, method=method, fusion=fusion, **model)
        return
    taught = teachers(data, model) if method["name"] == "umt" else ()
    result = train(data, tmp_path, taught, method=method, fusion=fusion, **model)
    assert len(result.history) == 2 and all(math.isfinite(h["loss"]) for h in result.history)
    last = result.history[-1]
    if method["name"] != "unimodal":
        assert {"prototype_accuracy_a", "prototype_accuracy_b", "rho", "grad_angle_a", "grad_angle_b"} <= set(last)
    if method["name"] == "pmr":
        assert {"pmr_rho", "pmr_coef_a", "pmr_coef_b"} <= set(last)
        state = torch.load(result.checkpoint / "method_state.pt", weights_only=True)
        assert state["prototypes"]["a"].shape[0] == 4 and torch.isfinite(state["prototypes"]["b"]).all()
    if method["name"] == "relearning":  # diagnosed after the second epoch, from the shards
        assert {"relearning_purity_holdout_a", "relearning_weight_b"} <= set(last)
        assert 0 < last["relearning_purity_train_a"] <= 1
    if method["name"] == "mla":  # one step per modality on each batch, each on its own loss
        assert {"mla_loss_a", "mla_loss_b"} <= set(last)
    if method["name"] == "umt":  # each encoder distilled from its teacher
        assert {"umt_distill_a", "umt_distill_b"} <= set(last)
    if method["name"] == "cml":  # the penalty on confidence gained without a modality
        assert "cml_penalty" in last
    if method["name"] == "gblend":  # estimated at both epochs: 3 weights and the G of each head
        assert all({"gblend_weight/a", "gblend_weight/fused", "gblend_G/b"} <= set(h) for h in result.history)
    own_heads = method["name"] in ("aux_loss", "gblend", "mmpareto", "inforeg")
    if own_heads or (capabilities["splits"] and method["name"] != "unimodal"):
        assert {"head_accuracy_a", "head_accuracy_b"} <= set(last)


def test_cnn_encoders_train_on_images(shards, tmp_path):
    result = train(shards({"gray": (1, 8, 8), "color": (3, 8, 8)}, "images"), tmp_path, encoder="cnn",
                   embedding_dim=16, method={"name": "pmr"})
    assert math.isfinite(result.history[-1]["loss"]) and "grad_angle_gray" in result.history[-1]


def test_methods_say_why_they_cannot_run():
    from mmflow.components.balance.methods.aux_loss import AuxLossParams
    from mmflow.components.balance.methods.unimodal import UnimodalParams

    with pytest.raises(ValueError, match=r"^method unimodal: modality 'depth' is not in the data \(it has: a, b\)$"):
        build_method(UnimodalParams(modality="depth"), ["a", "b"], "concat", 0)
    with pytest.raises(ValueError, match=r"^method aux_loss: weights name unknown modalities \['z'\] "
                                         r"\(the data has: a, b\)$"):
        build_method(AuxLossParams(weights={"z": 1}), ["a", "b"], "concat", 0)
    with pytest.raises(ValueError, match="exactly 2 modalities"):
        build_classifier({"modalities": {"a": [2], "b": [2], "c": [2]}, "num_classes": 3, "hidden": [],
                          "embedding_dim": 4, "fusion": "film"})
    with pytest.raises(ValueError, match="set encoder: cnn"):
        TrainClassifierParams(fusion="mmtm")
    with pytest.raises(ValueError, match="use parameters: weights"):
        TrainClassifierParams.model_validate({"method": {"name": "ogm_ge", "parameters": "conv"}})
    TrainClassifierParams.model_validate({"encoder": "cnn", "method": {"name": "ogm_ge", "parameters": "conv"}})


def test_ogm_coefficient_matches_the_official_rule():
    scores = torch.tensor([30.0, 10.0])  # audio 3x visual
    coefs = ogm_coefficients(scores, alpha=0.8)
    torch.testing.assert_close(coefs, torch.tensor([1 - math.tanh(0.8 * 3.0), 1.0]))
    torch.testing.assert_close(ogm_coefficients(torch.tensor([5.0, 5.0]), 0.8), torch.tensor([1.0, 1.0]))


def _ogm_setup(params: OGMGEParams, epoch: int):
    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [4], "b": [4]}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": "concat"})
    method = build_method(params, ["a", "b"], "concat", seed=1)
    x = {"a": torch.randn(32, 4) * 3, "b": torch.randn(32, 4)}
    labels = torch.randint(3, (32,))
    out = model(x)
    torch.nn.functional.cross_entropy(out.logits, labels).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=epoch))
    stats = method.after_backward(out, labels)
    return model, before, stats


def test_ogm_scales_dominant_weights_only_and_leaves_the_rest():
    model, before, stats = _ogm_setup(OGMGEParams(alpha=0.8, noise=False), epoch=0)
    for name, p in model.named_parameters():
        modality = name.split(".")[1] if name.startswith("encoders.") else None
        if modality is not None and p.dim() > 1:
            torch.testing.assert_close(p.grad, before[name] * stats[f"coef_{modality}"])
        else:  # biases and the fusion head are untouched
            torch.testing.assert_close(p.grad, before[name])
    assert min(float(stats["coef_a"]), float(stats["coef_b"])) < 1


def test_ogm_ge_noise_has_the_unmodulated_gradients_std():
    model, before, stats = _ogm_setup(OGMGEParams(alpha=0.8, noise=True), epoch=0)
    name = "encoders.a.net.1.weight"
    grad = dict(model.named_parameters())[name].grad
    noise = grad - before[name] * stats["coef_a"]
    assert noise.std().item() == pytest.approx(before[name].std().item(), rel=0.25)
    assert abs(noise.mean().item()) < 3 * before[name].std().item() / math.sqrt(noise.numel())


def test_ogm_window_is_inclusive():
    params = OGMGEParams(start_epoch=1, end_epoch=2, noise=False)
    assert [params.active(e) for e in range(4)] == [False, True, True, False]
    model, before, stats = _ogm_setup(params, epoch=3)
    assert stats == {} and all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())


def test_modality_dropout_drops_at_rate_p_and_keeps_one_modality():
    from mmflow.components.balance.methods.modality_dropout import ModalityDropoutParams

    torch.manual_seed(0)
    method = build_method(ModalityDropoutParams(p=0.3), ["a", "b"], "concat", seed=0)
    method.bind(TrainingContext(None, torch.device("cpu")))
    out = method.prepare_inputs({"a": torch.ones(20000, 4), "b": torch.ones(20000, 2, 2)})
    dropped_a, dropped_b = out["a"].sum(1) == 0, out["b"].sum((1, 2)) == 0
    assert not (dropped_a & dropped_b).any()
    # P(drop a) = p - P(both drawn) = 0.3 - 0.09 = 0.21, since a sample drawn for both keeps both
    assert dropped_a.float().mean().item() == pytest.approx(0.21, abs=0.01)
    assert torch.equal(out["a"][~dropped_a], torch.ones(int((~dropped_a).sum()), 4))


def test_aux_loss_is_the_weighted_sum_of_fused_and_modality_losses():
    from mmflow.components.balance.methods.aux_loss import AuxLossParams
    from mmflow.components.models.multimodal import MultimodalOutput

    labels = torch.tensor([0, 1])
    logits = {"a": torch.tensor([[2.0, 0.0], [0.0, 2.0]]), "b": torch.tensor([[0.0, 0.0], [0.0, 0.0]])}
    fused = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    method = build_method(AuxLossParams(weights={"a": 0.5}, fused_weight=2.0), ["a", "b"], "concat", seed=0)
    method.bind(TrainingContext(None, torch.device("cpu")))
    loss, stats = method.loss(MultimodalOutput(fused, {}, logits), labels)
    expected = 2.0 * math.log(1 + math.exp(-1)) + 0.5 * math.log(1 + math.exp(-2)) + 1.0 * math.log(2)
    assert float(loss) == pytest.approx(expected)
    assert float(stats["loss_b"]) == pytest.approx(math.log(2))


def test_ogm_conv_modulates_convolution_kernels_only():
    from mmflow.components.balance.methods.ogm_ge import touched

    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [1, 8, 8], "b": [1, 8, 8]}, "num_classes": 3, "encoder": "cnn", "hidden": [],
                              "embedding_dim": 6, "fusion": "concat"})
    method = build_method(OGMGEParams(alpha=0.8, noise=False, parameters="conv"), ["a", "b"], "concat", seed=1)
    x = {"a": torch.rand(16, 1, 8, 8) * 4, "b": torch.rand(16, 1, 8, 8)}
    labels = torch.randint(3, (16,))
    out = model(x)
    torch.nn.functional.cross_entropy(out.logits, labels).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=0))
    stats = method.after_backward(out, labels)
    assert min(float(stats["coef_a"]), float(stats["coef_b"])) < 1
    kernels = 0
    for name, p in model.named_parameters():
        modality = name.split(".")[1] if name.startswith("encoders.") else None
        if modality is not None and p.dim() == 4:
            kernels += 1
            torch.testing.assert_close(p.grad, before[name] * stats[f"coef_{modality}"])
        else:  # the encoders' linear layer, biases and the fusion keep their gradients
            torch.testing.assert_close(p.grad, before[name])
    assert kernels == 8
    linear, kernel, bias = torch.zeros(3, 4), torch.zeros(2, 1, 3, 3), torch.zeros(3)
    assert [touched("fc.weight", linear, "conv"), touched("c.weight", kernel, "conv"), touched("b", bias, "conv")] == \
        [False, True, False]
    assert [touched("fc.weight", linear, "weights"), touched("c.weight", kernel, "weights"),
            touched("fc.bias", bias, "weights"), touched("scale", linear, "weights")] == [True, True, False, False]


def test_build_method_keeps_the_data_and_the_seed_and_validation_checks_the_fusion():
    from mmflow.components.balance.methods.pmr import PMRParams
    from mmflow.components.balance.methods.unimodal import UnimodalParams

    method = build_method(PMRParams(), ["a", "b"], "concat", 7)
    assert (type(method).__name__, method.modalities, method.seed) == ("PMR", ["a", "b"], 7)
    assert build_method(UnimodalParams(modality="b"), ["a", "b"], "concat", 0).needs.modalities == ("b",)
    assert build_method(PMRParams(), ["a", "b"], "concat", 0).needs.modalities is None
    with pytest.raises(ValueError, match="mmtm couples the modality streams"):
        TrainClassifierParams.model_validate({"encoder": "cnn", "fusion": "mmtm", "method": {"name": "gblend",
                                                                                           "mode": "online"}})


def test_ogm_coefficients_compare_each_score_with_the_mean_of_the_others():
    coefs = ogm_coefficients(torch.tensor([3.0, 1.0, 2.0]), alpha=0.5)  # ratios 2, 0.4, 1
    torch.testing.assert_close(coefs, torch.tensor([1 - math.tanh(0.5 * 2.0), 1.0, 1.0]))


def test_ogm_uses_prototypes_where_the_fusion_does_not_split():
    params = OGMGEParams(proto_fraction=0.2)
    assert build_method(params, ["a", "b"], "gated", seed=0).needs.prototype_fraction == 0.2
    assert build_method(params, ["a", "b"], "sum", seed=0).needs.prototype_fraction == 0.0
    method = build_method(params, ["a", "b"], "film", seed=0)
    method.bind(TrainingContext(None, torch.device("cpu"), epoch=0))
    method.before_epoch(ClassSums({"a": torch.tensor([[1.0], [2.0]]), "b": torch.tensor([[3.0], [4.0]])},
                                  torch.tensor([1.0, 1.0])))
    # class 1 unseen: it keeps its prototype
    method.before_epoch(ClassSums({"a": torch.tensor([[6.0], [0.0]]), "b": torch.tensor([[2.0], [0.0]])},
                                  torch.tensor([2.0, 0.0])))
    torch.testing.assert_close(method.tracker.prototypes["a"], torch.tensor([[3.0], [2.0]]))
    torch.testing.assert_close(method.tracker.prototypes["b"], torch.tensor([[1.0], [4.0]]))


def test_ogm_weights_mode_leaves_one_dimensional_weights_alone():
    from mmflow.components.balance.methods.ogm_ge import touched

    assert not touched("norm.weight", torch.zeros(3), "weights")  # e.g. batch norm's scale
    assert touched("fc.weight", torch.zeros(3, 2), "weights")


@pytest.mark.parametrize("features", [1, 2])
def test_ogm_ge_noise_on_the_smallest_weights(features):
    """A 1-element gradient has no spread (no noise, never NaN); a 2-element one has."""
    torch.manual_seed(0)
    encoder = torch.nn.Linear(features, 1, bias=False)
    model = torch.nn.Module()
    model.encoders = torch.nn.ModuleDict({"a": encoder, "b": torch.nn.Linear(1, 1, bias=False)})
    out = build_classifier({"modalities": {"a": [1], "b": [1]}, "num_classes": 2, "hidden": [],
                            "embedding_dim": 2, "fusion": "concat"})({"a": torch.ones(4, 1), "b": torch.ones(4, 1)})
    encoder.weight.grad = torch.arange(1.0, features + 1).view(1, features)
    model.encoders["b"].weight.grad = torch.ones(1, 1)
    # alpha 0: coefficient 1, only the noise acts
    method = build_method(OGMGEParams(alpha=0.0), ["a", "b"], "concat", seed=0)
    method.bind(TrainingContext(model, torch.device("cpu"), epoch=0))
    method.after_backward(out, torch.tensor([0, 1, 0, 1]))
    grad = encoder.weight.grad
    assert torch.isfinite(grad).all()
    if features == 1:
        assert torch.equal(grad, torch.tensor([[1.0]]))
    else:
        assert not torch.equal(grad, torch.tensor([[1.0, 2.0]]))


def test_methods_make_their_tensors_on_the_inputs_device():
    """Run with another default device: a tensor a method creates without naming its inputs' device lands
    there and fails to mix (as it would on a GPU, where the inputs are not on the default device)."""
    from mmflow.components.balance.methods.modality_dropout import ModalityDropoutParams

    dropout = build_method(ModalityDropoutParams(p=0.5), ["a", "b"], "concat", seed=0)
    dropout.bind(TrainingContext(None, torch.device("cpu"), epoch=0))
    features = {"a": torch.ones(8, 3), "b": torch.ones(8, 2)}
    torch.manual_seed(0)
    model = build_classifier({"modalities": {"a": [4], "b": [4]}, "num_classes": 3, "hidden": [5],
                              "embedding_dim": 6, "fusion": "gated"})
    ogm = build_method(OGMGEParams(alpha=0.8, noise=True), ["a", "b"], "gated", seed=1)
    ogm.tracker.prototypes = {m: torch.randn(3, 6) for m in ("a", "b")}
    x, labels = {"a": torch.randn(8, 4), "b": torch.randn(8, 4)}, torch.randint(3, (8,))
    out = model(x)
    torch.nn.functional.cross_entropy(out.logits, labels).backward()
    with torch.device("meta"):
        dropped = dropout.prepare_inputs(features)
        ogm.bind(TrainingContext(model, torch.device("cpu"), epoch=0))
        stats = ogm.after_backward(out, labels)
    assert dropped["a"].device.type == "cpu" and stats["coef_a"].device.type == "cpu"
    assert all(p.grad.device.type == "cpu" for p in model.parameters() if p.grad is not None)
