"""Per-worker training loop and evaluation of the multimodal classifier (runs on Ray workers).

The same loop trains event localization (`config["task"] == "localization"`): its model
treats segments as samples, labels are flattened to match, and the manifest's background
class reaches the balancing method through `LoopState.background`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from mmflow.engine import TrainSession

from ..balance.base import LoopState
from ..balance.methods import build_method
from ..balance.prototypes import update_prototypes
from ..balance.gblend import ProbeLosses
from ..data.shards import ShardReader, load_manifest, sample_keys
from ..models.batch_statistics import batch_statistics
from ..models.build import WEIGHTS, build_classifier, load_classifier, save_classifier
from ..models.multimodal import MultimodalClassifier
from .blend_probes import holdout_split, load_samples, probe_configs, probe_losses, run_probe
from .training_params import TrainClassifierParams, TrainLocalizationParams
from .diagnostics import EpochTotals, batch_diagnostics, gradient_angles
from .optim import make_optimizer, make_schedule


def train_worker(session: TrainSession, config: dict[str, Any]) -> None:
    """One worker's loop: its shards, DDP model, the balancing method's hooks, diagnostics, checkpoint."""
    params_class = TrainLocalizationParams if config.get("task") == "localization" else TrainClassifierParams
    params = params_class(**config["params"])
    torch.manual_seed(session.seed)
    train_dir = Path(config["train"])
    manifest = load_manifest(train_dir)
    num_classes = manifest["num_classes"]
    method = build_method(params.method, list(manifest["modalities"]), params.fusion, session.seed)
    train_keys, holdout = None, None
    if method.holdout > 0:  # the method's own validation data never trains the model
        train_keys, holdout_keys = holdout_split(sample_keys(manifest), method.params, session.seed)
        session.log(f"{len(holdout_keys)} training samples held out as {params.method.name} validation")
        if session.rank == 0:  # measured by the probes rank 0 launches, read once
            holdout = load_samples(train_dir, holdout_keys)
    reader = ShardReader(train_dir, rank=session.rank, world_size=session.world_size, seed=session.seed,
                         shuffle_buffer=params.shuffle_buffer, uneven=params.uneven_shards, keys=train_keys,
                         augment=True, workers=params.loader_workers, on_error=params.on_error,
                         verify=params.verify_shards)
    plan = reader.plan(0)
    if plan.padded or plan.dropped:
        session.log(f"shards split unevenly over {session.world_size} workers: "
                    f"{plan.padded} sample(s) padded, {plan.dropped} dropped per epoch")
    architecture = params.architecture(manifest, method.model_modalities(), method.modality_heads)
    device = session.device
    built = build_classifier(architecture)
    restored = _restorable(session, config)
    if restored is not None:  # a worker or the driver died: continue from the last checkpoint
        built.load_state_dict(torch.load(restored / WEIGHTS, weights_only=True, map_location="cpu"))
    model = session.prepare_model(built, find_unused_parameters=built.may_leave_parameters_unused)
    core = getattr(model, "module", model)
    optimizer = make_optimizer(params, model.parameters())
    schedule = make_schedule(params, optimizer)
    first_epoch = 0
    if restored is not None:
        saved = torch.load(restored / TRAINING_STATE, weights_only=True, map_location=device)
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        if (restored / METHOD_STATE).exists():
            method.load_state_dict(torch.load(restored / METHOD_STATE, weights_only=True, map_location=device))
        first_epoch = saved["epoch"] + 1
        session.log(f"resumed from the checkpoint of epoch {first_epoch}")
    state = LoopState(core, core.modalities, num_classes, device, epochs=params.epochs,
                      all_reduce_sum=session.all_reduce_sum, background=manifest.get("background"))
    if getattr(params, "loss", "cross_entropy") == "avel_margin":  # localization's original loss
        from ..models.localization import avel_margin_loss

        state.fused_loss = avel_margin_loss

    def run_probes(heads: list[str]) -> dict[str, ProbeLosses]:
        """Rank 0 runs the probes as side tasks on the held-out data; every rank gets their losses."""
        losses = torch.zeros(len(heads), 4, dtype=torch.float64, device=device)
        if session.rank == 0:
            configs = probe_configs(heads, core, architecture, train_dir, manifest, train_keys, holdout,
                                    params.method, params, session.seed, draw=state.epoch)
            found = probe_losses(session.run_tasks(run_probe, configs), heads)
            losses += torch.tensor([dataclasses.astuple(found[h]) for h in heads], dtype=torch.float64)
        session.all_reduce_sum(losses)  # a broadcast: the other ranks hold zeros
        return {h: ProbeLosses(*row.tolist()) for h, row in zip(heads, losses)}

    state.run_probes = run_probes
    fraction = max(method.prototype_fraction, params.diagnostic_fraction if params.diagnostics else 0.0)
    prototypes: dict[str, torch.Tensor] = {}  # plain class means, for the diagnostics

    for epoch in range(first_epoch, params.epochs):
        started = time.perf_counter()
        state.epoch = epoch
        if fraction > 0:
            state.subset_sums, state.subset_counts = subset_class_sums(core, reader, epoch, fraction,
                                                                       params.batch_size, session)
            if params.diagnostics:
                prototypes = {m: update_prototypes(prototypes.get(m), s, state.subset_counts)
                              for m, s in state.subset_sums.items()}
        method.before_epoch(state)
        model.train()
        totals = EpochTotals()
        trained = 0  # samples (clips, in localization) this rank trained on
        for step, (features, labels) in enumerate(reader.batches(epoch, params.batch_size)):
            trained += len(next(iter(features.values())))
            features = {m: x.to(device, non_blocking=True) for m, x in features.items()}
            labels = labels.to(device, non_blocking=True).reshape(-1)  # segments as samples in localization
            if params.diagnostics and step < params.angle_batches:
                for m, angle in gradient_angles(core, features, labels, prototypes).items():
                    totals.add(f"grad_angle_{m}", angle)
            out = model(method.prepare_inputs(features, state))
            loss, stats = method.loss(out, labels, state)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats.update(method.after_backward(out, labels, state))
            if params.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip_norm)
            optimizer.step()
            if params.diagnostics:
                batch_diagnostics(totals, out, labels, loss, prototypes)
            else:
                totals.add("loss", loss * labels.numel(), labels.numel())
                totals.add("train_accuracy", (out.logits.argmax(1) == labels).sum(), labels.numel())
            for key, value in stats.items():
                totals.add(f"{params.method.name}_{key}", value)
        lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        metrics = {"epoch": epoch, **totals.means(session.all_reduce_sum), "lr": lr,
                   **{f"{params.method.name}_{k}": v for k, v in method.epoch_metrics().items()}}
        seconds = time.perf_counter() - started
        trained = int(session.all_reduce_sum(torch.tensor(float(trained), device=device)).item())
        metrics.update(epoch_seconds=seconds, samples_per_s=trained / seconds, train_samples=trained,
                       padded_samples=plan.padded, dropped_samples=plan.dropped)
        if params.on_error == "skip":  # shard reads cut short this epoch, over all ranks
            reads = session.all_reduce_sum(torch.tensor(float(reader.corrupt_reads), device=device))
            metrics["corrupt_shard_reads"], reader.corrupt_reads = int(reads.item()), 0
        if restored is not None and epoch == first_epoch:
            metrics["resumed_at_epoch"] = first_epoch
        session.log(_progress(epoch, params.epochs, metrics))
        with tempfile.TemporaryDirectory() as tmp:
            if session.rank == 0:
                save_classifier(Path(tmp), core, architecture)
                if method.state_dict():  # e.g. PMR's prototypes
                    torch.save(method.state_dict(), Path(tmp) / METHOD_STATE)
                torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "epoch": epoch,
                            "config": _config_digest(config)}, Path(tmp) / TRAINING_STATE)
            session.report(metrics, tmp if session.rank == 0 else None)


def _progress(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    shown = [k for k in metrics if k.startswith(("head_accuracy_", "prototype_accuracy_")) or k == "rho"]
    extra = " ".join(f"{k.replace('_accuracy', '')} {metrics[k]:.3f}" for k in shown)
    return (f"epoch {epoch + 1}/{epochs} loss {metrics['loss']:.4f} train_acc {metrics['train_accuracy']:.4f} "
            f"{extra} ({metrics['samples_per_s']:.0f} samples/s)")


@torch.no_grad()
def class_sums(model: MultimodalClassifier, batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]],
               num_classes: int, device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-class sums of each modality's embeddings and per-class sample counts over `batches`."""
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(num_classes, device=device)
    for features, labels in batches:
        labels = labels.to(device).reshape(-1)
        counts += torch.bincount(labels, minlength=num_classes)
        for m, z in model({m: x.to(device) for m, x in features.items()}).embeddings.items():
            sums.setdefault(m, torch.zeros(num_classes, z.shape[1], device=device)).index_add_(0, labels, z)
    return sums, counts


def subset_class_sums(model: MultimodalClassifier, reader: ShardReader, epoch: int, fraction: float,
                      batch_size: int, session: TrainSession) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """class_sums over a random `fraction` of training batches, summed over all ranks, with batch statistics.

    The prototypes are compared with training-step embeddings (PCE, OGM-GE's scores, the diagnostics), so
    they are computed the same way: with few steps an epoch, BatchNorm's running statistics lag the weights
    and eval-mode prototypes land far from every training embedding.
    """
    take = max(1, round(fraction * reader.steps_per_epoch(batch_size)))
    # a differently seeded pass: its first batches are a random subset of the training set
    subset = itertools.islice(reader.batches(_SUBSET_EPOCH_OFFSET + epoch, batch_size), take)
    with batch_statistics(model):
        sums, counts = class_sums(model, subset, reader.manifest["num_classes"], session.device)
    for m in sums:
        session.all_reduce_sum(sums[m])
    return sums, session.all_reduce_sum(counts)


_SUBSET_EPOCH_OFFSET = 1_000_003
METHOD_STATE = "method_state.pt"
TRAINING_STATE = "training_state.pt"  # optimizer, schedule, epoch: what resuming needs beyond the weights


def _config_digest(config: dict[str, Any]) -> str:
    # input paths are left out: a run resumed on another machine reads the same shards from elsewhere
    return hashlib.sha256(json.dumps({k: v for k, v in config.items() if k != "train"}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def _restorable(session: TrainSession, config: dict[str, Any]) -> Path | None:
    """The checkpoint to continue from, if there is one and it was written for this very config."""
    folder = session.restored()
    if folder is None or not (folder / TRAINING_STATE).exists():
        return None
    saved = torch.load(folder / TRAINING_STATE, weights_only=True, map_location="cpu")
    if saved.get("config") != _config_digest(config):
        session.history = []  # another configuration's run: start over
        return None
    return folder


@torch.no_grad()
def evaluate(model_dir: Path, train_dir: Path, test_dir: Path, batch_size: int,
             on_error: str = "fail") -> dict[str, float]:
    """Fused, per-modality head and per-modality prototype accuracy over every test sample.

    Prototypes are the class-mean training embeddings of the trained model (nearest-centroid).
    """
    model, architecture = load_classifier(model_dir)
    train = ShardReader(train_dir, shuffle=False, on_error=on_error, pad=False)  # every sample once
    sums, counts = class_sums(model, train.batches(0, batch_size), architecture["num_classes"], torch.device("cpu"))
    prototypes = {m: update_prototypes(None, s, counts) for m, s in sums.items()}
    reader = ShardReader(test_dir, shuffle=False, on_error=on_error, pad=False)
    correct: dict[str, int] = {}
    total = 0
    for features, labels in reader.batches(0, batch_size):
        out = model(features)
        hits = {"accuracy": out.logits.argmax(1) == labels}
        for m, logits in out.modality_logits.items():
            hits[f"accuracy_{m}_head"] = logits.argmax(1) == labels
        for m, centers in prototypes.items():
            hits[f"accuracy_{m}_prototype"] = torch.cdist(out.embeddings[m], centers).argmin(1) == labels
        for name, hit in hits.items():
            correct[name] = correct.get(name, 0) + int(hit.sum())
        total += labels.numel()
    metrics = {name: c / total for name, c in correct.items()}
    metrics["chance"] = 1 / architecture["num_classes"]
    if on_error == "skip":
        metrics["corrupt_shard_reads"] = train.corrupt_reads + reader.corrupt_reads
        metrics["unreadable_test_samples"] = reader.manifest["num_samples"] - total
    metrics["test_samples"] = total  # scored, each once
    return metrics
