"""The training loop's own pieces: the prototype subset, the samples each epoch trains on, the held-out data."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmflow.components.data.datasets import iter_samples, save_tensor_dataset
from mmflow.components.data.shards import ShardReader, load_manifest, sample_keys, write_shards
from mmflow.components.tasks.training_params import TrainClassifierParams
from mmflow.components.tasks.class_sums import class_sums, subset_class_sums
from mmflow.components.tasks.training_loop import train_worker
from mmflow.engine import InlineExecutor, Resources, TrainingJob

SAMPLES = 200


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    labels = torch.arange(SAMPLES) % 4
    gen = torch.Generator().manual_seed(0)
    data = {"label": labels, "a": torch.randn(SAMPLES, 3, generator=gen) + labels[:, None],
            "b": torch.randn(SAMPLES, 5, generator=gen)}
    save_tensor_dataset(root / "ds", {"train": data}, num_classes=4)
    write_shards(iter_samples(root / "ds", "train"), root / "shards", 20, num_classes=4)
    return root / "shards"


class Identity(torch.nn.Module):
    """A 'model' whose embeddings are its inputs: class sums are sums of the samples' features."""

    def forward(self, inputs):
        return SimpleNamespace(embeddings=dict(inputs))


def test_prototypes_come_from_a_random_fraction_of_the_training_batches(shards):
    reader = ShardReader(shards, seed=0)
    session = SimpleNamespace(device=torch.device("cpu"), all_reduce_sum=lambda t: t)
    model = Identity()
    for fraction, batches in ((0.1, 1), (0.3, 3), (1.0, 10)):  # 10 batches of 20 per epoch
        found = subset_class_sums(model, reader, epoch=0, fraction=fraction, batch_size=20, session=session)
        sums, counts = found.sums, found.counts
        assert counts.sum() == 20 * batches and sums["a"].shape == (4, 3)
    full_sums, full_counts = class_sums(model, reader.batches(0, 20), 4, torch.device("cpu"))
    torch.testing.assert_close(sums["a"], full_sums["a"])  # a fraction of 1 is every batch
    first = subset_class_sums(model, reader, epoch=0, fraction=0.1, batch_size=20, session=session).sums
    again = subset_class_sums(model, reader, epoch=1, fraction=0.1, batch_size=20, session=session).sums
    trained_first, _ = class_sums(model, [next(iter(reader.batches(0, 20)))], 4, torch.device("cpu"))
    assert not torch.allclose(first["a"], again["a"])  # redrawn every epoch
    assert not torch.allclose(first["a"], trained_first["a"])  # not the batch the epoch trains on first


class Normalized(torch.nn.Module):
    """Embeddings are BatchNorm of the inputs, then dropout: what the prototype pass must do with both."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.ModuleDict({"a": torch.nn.BatchNorm1d(3), "b": torch.nn.BatchNorm1d(5)})
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, inputs):
        return SimpleNamespace(embeddings={m: self.drop(self.norm[m](x)) for m, x in inputs.items()})


def test_prototypes_use_batch_statistics_as_training_steps_do_and_leave_the_model_as_it_was(shards):
    """With running statistics that lag (here: never updated, mean 0 and variance 1 while class c's
    feature a has mean c), eval-mode prototypes would sit far from every training embedding."""
    reader = ShardReader(shards, seed=0)
    session = SimpleNamespace(device=torch.device("cpu"), all_reduce_sum=lambda t: t)
    model = Normalized().train()
    found = subset_class_sums(model, reader, epoch=0, fraction=1.0, batch_size=SAMPLES, session=session)
    sums, counts = found.sums, found.counts
    features, labels = next(iter(reader.batches(0, SAMPLES)))  # one batch of every sample: any order
    a = features["a"]
    normalized = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + 1e-5)  # no dropout
    expected = torch.zeros(4, 3).index_add_(0, labels, normalized)
    torch.testing.assert_close(sums["a"], expected)
    torch.testing.assert_close(counts, torch.bincount(labels, minlength=4).float())
    for norm in model.norm.values():  # running statistics untouched
        torch.testing.assert_close(norm.running_mean, torch.zeros_like(norm.running_mean))
        torch.testing.assert_close(norm.running_var, torch.ones_like(norm.running_var))
        assert int(norm.num_batches_tracked) == 0
    assert model.training and model.drop.training and model.norm["a"].training
    model.eval()
    subset_class_sums(model, reader, epoch=0, fraction=0.1, batch_size=20, session=session)
    assert not model.training and not model.drop.training and not model.norm["a"].training


def test_an_epoch_reports_the_samples_it_trained_on_and_online_gblend_holds_its_validation_out(shards, tmp_path,
                                                                                            opened_readers):
    from mmflow.components.data.shards import split_keys
    from mmflow.components.tasks import training_loop

    def history(method: dict) -> list[dict]:
        params = TrainClassifierParams.model_validate({"epochs": 2, "batch_size": 20, "hidden": [8],
                                                       "embedding_dim": 4, "method": method})
        return InlineExecutor().train(train_worker, {"params": params.model_dump(), "train": str(shards)},
                                      TrainingJob(Resources(), tmp_path / method["name"], log=lambda _: None)).history

    assert [h["train_samples"] for h in history({"name": "naive"})] == [SAMPLES, SAMPLES]
    gblend = {"name": "gblend", "mode": "online", "warmup_super_epoch": 1, "super_epoch": 1, "holdout": 0.25}
    # the split gblend.estimate makes too, the same in every release
    kept, held = split_keys(sample_keys(load_manifest(shards)), 0.25, seed=0, salt="gblend-holdout")
    assert len(held) == 50
    opened = opened_readers(training_loop)
    epochs = history(gblend)
    assert [h["train_samples"] for h in epochs] == [SAMPLES - 50] * 2
    assert opened[0]["keys"] == kept
    # an estimate every epoch: the first waited for, the second's probes beside the epoch and taken at its end
    assert [any(k.startswith("gblend_G/") for k in h) for h in epochs] == [True, True]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's per-process peak reset")
def test_an_inline_trainings_peak_memory_leaves_out_what_earlier_steps_took(shards, tmp_path, memory_spike):
    """The inline executor trains every step of a run in one process, whose peak resident set only grows."""
    from mmflow.components.tasks.model_cost import peak_memory_mb

    params = TrainClassifierParams.model_validate({"epochs": 1, "batch_size": 50, "hidden": [8], "embedding_dim": 4,
                                                   "diagnostics": False})
    peak_memory_mb(torch.device("cpu"))  # an earlier step of the same run takes 1 GiB, then gives it back
    memory_spike(1024)
    peak_before = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
    result = InlineExecutor().train(train_worker, {"params": params.model_dump(), "train": str(shards)},
                                    TrainingJob(Resources(), tmp_path / "s", seed=3))
    assert 0 < result.history[0]["peak_memory_mb"] < peak_before - 512  # the training itself: ~150 MiB


def test_the_progress_line_shows_loss_accuracy_heads_prototypes_rho_and_speed():
    from mmflow.components.tasks.training_loop import _progress

    metrics = {"loss": 1.23456, "train_accuracy": 0.5, "head_accuracy_audio": 0.25, "prototype_accuracy_visual": 0.75,
               "rho": 1.5, "lr": 0.1, "samples_per_s": 1234.4}
    assert _progress(2, 8, metrics) == ("epoch 3/8 loss 1.2346 train_acc 0.5000 head_audio 0.250 prototype_visual "
                                        "0.750 rho 1.500 (1234 samples/s)")


def test_the_loop_reads_its_shards_as_the_params_say_and_counts_skipped_reads(shards, tmp_path, opened_readers):
    from mmflow.components.tasks import training_loop

    opened = opened_readers(training_loop)
    logged: list[str] = []
    params = TrainClassifierParams.model_validate({"epochs": 1, "batch_size": 50, "hidden": [8], "embedding_dim": 4,
                                                   "shuffle_buffer": 5, "uneven_shards": "drop", "on_error": "skip",
                                                   "diagnostics": False, "verify_shards": "every_epoch"})
    result = InlineExecutor().train(train_worker, {"params": params.model_dump(), "train": str(shards)},
                                    TrainingJob(Resources(), tmp_path / "s", seed=3, log=logged.append))
    assert opened == [{"rank": 0, "world_size": 1, "seed": 3, "shuffle_buffer": 5, "uneven": "drop", "keys": None,
                       "augment": True, "workers": 0, "on_error": "skip", "verify": "every_epoch"}]
    (epoch,) = result.history
    assert epoch["corrupt_shard_reads"] == 0 and epoch["padded_samples"] == epoch["dropped_samples"] == 0
    assert epoch["samples_per_s"] == pytest.approx(SAMPLES / epoch["epoch_seconds"])
    assert epoch["peak_memory_mb"] > 0
    assert epoch["lr"] == params.lr and set(epoch) >= {"loss", "train_accuracy", "epoch_seconds"}
    assert logged == [training_loop._progress(0, 1, epoch)]


def test_a_checkpoint_that_holds_code_is_refused_not_run(shards, tmp_path):
    """Checkpoints are data from a run folder or a bucket: loading one must never execute what it holds."""
    import pickle

    import torch

    params = TrainClassifierParams(epochs=1, batch_size=50, hidden=[8], embedding_dim=4, diagnostics=False,
                                   method={"name": "pmr"})
    config = {"params": params.model_dump(), "train": str(shards)}
    storage = tmp_path / "s"
    first = InlineExecutor().train(train_worker, config, TrainingJob(Resources(), storage, log=lambda _: None))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("model.pt", "training_state.pt", "method_state.pt"):
        saved = (storage / "checkpoint" / name).read_bytes()
        torch.save({"x": Payload()}, storage / "checkpoint" / name)
        with pytest.raises(pickle.UnpicklingError):
            # the same step again: it resumes from that checkpoint
            InlineExecutor().train(train_worker, config, TrainingJob(Resources(), storage, log=lambda _: None))
        assert not marker.exists(), name
        (storage / "checkpoint" / name).write_bytes(saved)
    assert first.checkpoint is not None


PMR = {"name": "pmr", "alpha": 1.0}


@pytest.mark.parametrize("method, limit, reads", [({"name": "naive"}, None, 0), (PMR, None, 1), (PMR, 0, 3)])
def test_diagnostics_look_at_every_kth_training_batch_and_keep_its_class_means(shards, tmp_path, monkeypatch,
                                                                               method, limit, reads):
    """With diagnostic_fraction 0.25, batches 0, 4 and 8 of the 10 an epoch get the per-head diagnostics. A method
    without prototypes of its own gets no pass over extra batches: the class means of the sampled batches'
    embeddings are the next epoch's prototypes, so the first epoch has no prototype diagnostics. PMR's own pass
    stays every epoch: it reads a random share of the batches before the first, then takes the inputs of batches 0,
    4 and 8 of the epoch before (unless they outgrow the memory limit: then it reads every time)."""
    from mmflow.components.tasks import training_loop

    calls = {"subset": 0, "kept": [], "diagnosed": [], "sampled": []}
    subset, kept, diagnose, add = (training_loop.subset_class_sums, training_loop.pass_class_sums,
                                   training_loop.batch_diagnostics, training_loop.add_class_sums)
    monkeypatch.setattr(training_loop, "subset_class_sums",
                        lambda *a, **k: calls.__setitem__("subset", calls["subset"] + 1) or subset(*a, **k))

    def from_kept(model, batches, num_classes, session):
        calls["kept"].append(torch.cat([labels for _, labels in batches]))
        return kept(model, batches, num_classes, session)

    def diagnosed(totals, out, labels, prototypes):
        calls["diagnosed"].append(({m: p.clone() for m, p in prototypes.items()}, labels.clone()))
        diagnose(totals, out, labels, prototypes)

    def sampled(found, embeddings, labels, num_classes):
        calls["sampled"].append(({m: z.detach().clone() for m, z in embeddings.items()}, labels.clone()))
        return add(found, embeddings, labels, num_classes)

    monkeypatch.setattr(training_loop, "pass_class_sums", from_kept)
    monkeypatch.setattr(training_loop, "batch_diagnostics", diagnosed)
    monkeypatch.setattr(training_loop, "add_class_sums", sampled)
    if limit is not None:
        monkeypatch.setattr("mmflow.components.tasks.class_sums.KEPT_BYTES", limit)
    params = TrainClassifierParams.model_validate({"epochs": 3, "batch_size": 20, "hidden": [8], "embedding_dim": 4,
                                                   "method": method, "diagnostic_fraction": 0.25})
    history = InlineExecutor().train(train_worker, {"params": params.model_dump(), "train": str(shards)},
                                     TrainingJob(Resources(), tmp_path / "run", log=lambda _: None)).history
    assert calls["subset"] == reads and len(calls["diagnosed"]) == 3 * 3  # batches 0, 4 and 8 of each epoch
    assert all("head_accuracy_a" in h for h in history)
    assert ["prototype_accuracy_a" in h for h in history] == [method["name"] == "pmr", True, True]
    if method["name"] == "pmr" and limit is None:  # before epochs 1 and 2: the batches the epoch before diagnosed
        assert len(calls["kept"]) == 2
        for epoch, labels in enumerate(calls["kept"]):
            torch.testing.assert_close(labels, torch.cat([y for _, y in calls["diagnosed"][3 * epoch:3 * epoch + 3]]))
    if method["name"] == "naive":  # epoch 1's prototypes: the class means of epoch 0's sampled batches
        assert len(calls["sampled"]) == 9
        for m in ("a", "b"):
            z = torch.cat([e[m] for e, _ in calls["sampled"][:3]])
            labels = torch.cat([y for _, y in calls["sampled"][:3]])
            means = torch.stack([z[labels == c].mean(0) for c in range(4)])
            torch.testing.assert_close(calls["diagnosed"][3][0][m], means)
    else:
        assert calls["sampled"] == []
