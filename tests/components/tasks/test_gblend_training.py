"""G-Blend in workflows: held-out data stays out of training, wiring rules, estimate -> offline training."""

from __future__ import annotations

import json

import pytest
import torch

from mmflow.components.balance.methods.gblend.estimate import BlendEstimateParams
from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
from mmflow.components.data.shards import ShardReader, load_manifest, sample_keys, split_keys, write_shards
from mmflow.components.models.build import build_classifier
from mmflow.components.balance.methods.gblend.probes import (head_forward, head_parameters, load_samples,
                                                   probe_configs, run_probe)
from mmflow.components.tasks.training_params import ClassifierParams

WORKFLOW = """
name: gb
seed: 3
executor: inline
steps:
  data:
    component: data.synthetic
    params:
      num_classes: 3
      train_size: 240
      test_size: 60
      modalities: [{name: a, dim: 4, signal: 2.0}, {name: b, dim: 64, informative: 2, signal: 1.0}]
  shard:
    component: data.shard
    inputs: {dataset: "${steps.data.outputs.dataset}"}
    params: {samples_per_shard: 40}
  estimate:
    component: gblend.estimate
    inputs: {train: "${steps.shard.outputs.train}"}
    params: {batch_size: 32, hidden: [16], embedding_dim: 8, lr: 0.1, probe_epochs: 2, holdout: 0.25}
  train:
    component: train.classifier
    inputs: {train: "${steps.shard.outputs.train}", weights: "${steps.estimate.outputs.weights}"}
    params: {epochs: 2, batch_size: 32, hidden: [16], embedding_dim: 8, lr: 0.1, method: {name: gblend}}
"""
FROM_CHECKPOINT = """
  again:
    component: gblend.estimate
    inputs: {train: "${steps.shard.outputs.train}", model: "${steps.train.outputs.model}"}
    params: {batch_size: 32, lr: 0.1, holdout: 0.25}
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("gb")
    labels = torch.arange(200) % 4
    gen = torch.Generator().manual_seed(0)
    data = {"label": labels, "a": torch.randn(200, 3, generator=gen) + labels[:, None],
            "b": torch.randn(200, 5, generator=gen)}
    save_tensor_dataset(root / "ds", {"train": data, "test": {k: v[:20] for k, v in data.items()}}, num_classes=4)
    for split in ("train", "test"):
        write_shards(iter_samples(root / "ds", split), root / split, 32, num_classes=4)
    return root


def gblend_holdout(keys: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """The split the training loop holds out for online G-Blend (and gblend.estimate makes)."""
    return split_keys(keys, fraction, seed, salt="gblend-holdout")


def test_blend_validation_is_disjoint_from_probe_training_and_never_the_test_split(shards):
    manifest = load_manifest(shards / "train")
    params = BlendEstimateParams(holdout=0.1, probe_fraction=0.5)
    train_keys, holdout = gblend_holdout(sample_keys(manifest), params.holdout, seed=0)
    assert len(holdout) == 20 and not set(train_keys) & set(holdout)
    assert gblend_holdout(sample_keys(manifest), params.holdout, seed=0)[1] == holdout  # deterministic
    assert gblend_holdout(sample_keys(manifest), params.holdout, seed=1)[1] != holdout
    architecture = ClassifierParams(hidden=[4], embedding_dim=4).architecture(manifest, ["a", "b"], "own")
    model = build_classifier(architecture)
    held = load_samples(shards / "train", holdout)
    configs = probe_configs(["a", "b", "fused"], model, architecture, shards / "train", manifest, train_keys, held,
                            params, ClassifierParams(), seed=0, draw=5)
    test_keys = set(sample_keys(load_manifest(shards / "test")))
    for config in configs:
        assert len(config["probe_keys"]) >= 90 and not set(config["probe_keys"]) & set(holdout)
        assert not set(config["probe_keys"]) & test_keys
        measured = load_samples(shards / "train", config["probe_keys"][:20])  # T': what the probes train on
        assert torch.equal(config["measure"][1], measured[1]) and torch.equal(config["measure"][0]["a"], measured[0]["a"])
        assert config["holdout"] is held
    redrawn = probe_configs(["a"], model, architecture, shards / "train", manifest, train_keys, held, params,
                            ClassifierParams(), seed=0, draw=6)[0]["probe_keys"]
    assert set(redrawn) != set(configs[0]["probe_keys"])  # a new subset per estimate


def test_reader_yields_only_the_given_keys_evenly_over_ranks(shards):
    manifest = load_manifest(shards / "train")
    keys, held = gblend_holdout(sample_keys(manifest), 0.3, seed=0)
    seen = []
    for rank in range(2):
        reader = ShardReader(shards / "train", rank=rank, world_size=2, keys=keys)
        seen.append([s["__key__"] for s in reader.samples(0)])
    assert len(seen[0]) == len(seen[1]) == reader.plan(0).num_samples
    assert not set(seen[0] + seen[1]) & set(held) and set(seen[0] + seen[1]) == set(keys)


def test_a_modality_probe_trains_only_its_encoder_and_head(shards):
    manifest = load_manifest(shards / "train")
    classifier = ClassifierParams(hidden=[8], embedding_dim=4, lr=0.5)
    architecture = classifier.architecture(manifest, ["a", "b"], "own")
    model = build_classifier(architecture)
    keys, held = gblend_holdout(sample_keys(manifest), 0.2, seed=0)
    (config,) = probe_configs(["a"], model, architecture, shards / "train", manifest, keys,
                              load_samples(shards / "train", held), BlendEstimateParams(), classifier, seed=0, draw=0)
    losses = run_probe(config, torch.device("cpu"))
    assert set(losses) == {"train_before", "val_before", "train_after", "val_after"}
    assert losses["train_after"] < losses["train_before"]  # modality a carries the label
    ids = lambda parameters: {id(p) for p in parameters}  # noqa: E731
    assert ids(head_parameters(model, "a")) == ids([*model.encoders["a"].parameters(), *model.heads["a"].parameters()])
    assert ids(head_parameters(model, "fused")) == ids(model.parameters()) - ids(model.heads.parameters())
    features = {"a": torch.randn(5, 3), "b": torch.randn(5, 5)}
    torch.testing.assert_close(head_forward(model, "a")(features), model.heads["a"](model.encoders["a"](features["a"])))
    torch.testing.assert_close(head_forward(model, "fused")(features), model(features).logits)


def test_offline_gblend_trains_with_weights_from_the_estimate_step(cli, write_workflow, tmp_path):
    status, out, err = cli("run", write_workflow(WORKFLOW + FROM_CHECKPOINT), "--run-dir", tmp_path / "run",
                           "--runs-root", tmp_path)
    assert status == 0, err
    record = json.loads((tmp_path / "run" / "estimate" / "outputs" / "weights").read_text())
    assert set(record["weights"]) == {"a", "b", "fused"} and sum(record["weights"].values()) == pytest.approx(1)
    assert set(record["losses"]["b"]) == {"train_before", "val_before", "train_after", "val_after"}
    assert record["holdout_samples"] == 60
    history = json.loads((tmp_path / "run" / "train" / "metrics.json").read_text())["history"]
    assert history[-1]["gblend_weight/a"] == pytest.approx(record["weights"]["a"])
    # from the trained checkpoint, the probes start where training ended: lower losses than from scratch
    again = json.loads((tmp_path / "run" / "again" / "outputs" / "weights").read_text())
    assert again["losses"]["fused"]["val_before"] < record["losses"]["fused"]["val_before"]


@pytest.mark.parametrize("edit, where, message", [
    (("weights: \"${steps.estimate.outputs.weights}\"}", "}"), ":23: steps.train.params.method",
     "method gblend (offline) needs weights: give method.weights or wire inputs.weights"),
    (("method: {name: gblend}", "method: {name: naive}"), ":22: steps.train.inputs.weights",
     "only method gblend (mode: offline) takes blend weights"),
    (("method: {name: gblend}", "method: {name: gblend, weights: {a: 1, b: 1, fused: 1}}"),
     ":23: steps.train.params.method.weights", "weights are given twice"),
    (("method: {name: gblend}", "fusion: mmtm, encoder: cnn, method: {name: gblend, mode: online}"),
     ":23: steps.train.params", "mmtm couples the modality streams"),
    (("probe_epochs: 2,", "probe_epochs: 2, fusion: mmtm, encoder: cnn,"), ":19: steps.estimate.params",
     "mmtm couples the modality streams"),
])
def test_blend_wiring_mistakes_are_validation_errors(cli, write_workflow, edit, where, message):
    path = write_workflow(WORKFLOW.replace(*edit))
    status, out, err = cli("validate", path)
    assert status == 2 and f"{path}{where}" in err and message in err, err


def test_held_out_samples_are_read_once_in_key_order(shards):
    manifest = load_manifest(shards / "train")
    keys = sample_keys(manifest)[5:60:3]
    features, labels = load_samples(shards / "train", keys)
    order = {key: i for i, key in enumerate(sample_keys(manifest))}
    expected = [int(s["cls"]) for s in ShardReader(shards / "train", shuffle=False).samples(0) if s["__key__"] in keys]
    assert labels.tolist() == expected and len(expected) == len(keys) == features["a"].shape[0]
    assert sorted(keys, key=order.get) == keys


def test_probes_train_on_whole_shards_up_to_their_fraction_and_redraw_by_seed_and_draw(shards):
    from mmflow.components.balance.methods.gblend.probes import probe_keys

    manifest = load_manifest(shards / "train")  # 200 samples in shards of 32 (the last holds 8)
    keys = sample_keys(manifest)[:192]  # six whole shards
    picked = probe_keys(manifest, keys, 64 / 192, seed=0, draw=0)
    assert len(picked) == 64  # two whole shards reach the fraction exactly: no third
    assert picked == probe_keys(manifest, keys, 64 / 192, seed=0, draw=0)
    assert picked != probe_keys(manifest, keys, 64 / 192, seed=1, draw=0) != probe_keys(manifest, keys, 64 / 192,
                                                                                         seed=0, draw=1)


def test_a_probe_reads_its_keys_with_its_seed_and_clips_its_gradients(shards, opened_readers):
    from mmflow.components.balance.methods.gblend import probes

    manifest = load_manifest(shards / "train")
    classifier = ClassifierParams(hidden=[8], embedding_dim=4, optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=5.0,
                                  grad_clip_norm=1e-6, shuffle_buffer=7)
    architecture = classifier.architecture(manifest, ["a", "b"], "own")
    model = build_classifier(architecture)
    keys, held = gblend_holdout(sample_keys(manifest), 0.2, seed=0)
    (config,) = probe_configs(["fused"], model, architecture, shards / "train", manifest, keys,
                              load_samples(shards / "train", held), BlendEstimateParams(), classifier, seed=4, draw=2)
    assert config["seed"] == 6 and config["probe_keys"] != probe_configs(
        ["fused"], model, architecture, shards / "train", manifest, keys, load_samples(shards / "train", held),
        BlendEstimateParams(), classifier, seed=5, draw=2)[0]["probe_keys"]
    opened = opened_readers(probes)
    losses = run_probe(config, torch.device("cpu"))
    assert opened == [{"keys": config["probe_keys"], "seed": 6, "shuffle_buffer": 7}]
    assert losses["train_after"] == pytest.approx(losses["train_before"], abs=1e-4)  # steps of norm 1e-6 at most
