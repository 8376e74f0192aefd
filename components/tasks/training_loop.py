"""The training loop every training step shares (runs on each worker): a problem, a balancing method, a model.

The loop knows no method and no task: the problem (problems.py) gives the params, labels, model and
loss; the method declares what it needs (`Needs`: class sums before each epoch, per-modality heads, a
holdout, side tasks) and is bound to a `TrainingContext`; the loop provides those, runs the method's
hooks around each step, adds the imbalance diagnostics and saves a checkpoint every epoch.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmflow.engine import TrainSession

from ..balance.base import ClassSums, TrainingContext, build_method
from ..balance.prototypes import PrototypeTracker
from ..data.shards import ShardReader, load_manifest, sample_keys, split_keys
from ..models.build import WEIGHTS, save_classifier
from .checkpoint import METHOD_STATE, TRAINING_STATE, config_digest, restorable
from .class_sums import KeptBatches, add_class_sums, kept_batches, pass_class_sums, subset_class_sums
from .diagnostics import EpochTotals, batch_diagnostics, batch_results, gradient_angles
from .model_cost import peak_memory_mb
from .optim import make_optimizer, make_schedule
from .problems import problem_of


def train_worker(session: TrainSession, config: dict[str, Any]) -> None:
    """One worker's loop: set up (or restore), then each epoch the method's preparation, the steps, the report
    and a checkpoint."""
    peak_memory_mb(session.device)  # each epoch's peak from here on: not what earlier steps of an inline run took
    run = Training(session, config)
    for epoch in range(run.first_epoch, run.params.epochs):
        run.run_epoch(epoch)


class Training:
    """One worker's training state: params, data, model, optimizer, method and diagnostics."""

    def __init__(self, session: TrainSession, config: dict[str, Any]) -> None:
        self.session, self.config = session, config
        problem = problem_of(config)
        self.problem, self.params = problem, problem.params(**config["params"])
        params, device = self.params, session.device
        torch.manual_seed(session.seed)
        shards = Path(config["train"])
        manifest = load_manifest(shards)
        self.method = method = build_method(params.method, list(manifest["modalities"]), problem.fusion(params),
                                            session.seed)
        self.needs = needs = method.needs  # fixed for the run
        train_keys, holdout_keys = None, []
        if needs.holdout > 0:  # the method's own validation data never trains the model
            train_keys, holdout_keys = split_keys(sample_keys(manifest), needs.holdout, session.seed,
                                                  salt=f"{params.method.name}-holdout")
            session.log(f"{len(holdout_keys)} training samples held out as {params.method.name} validation")
        self.reader = ShardReader(shards, rank=session.rank, world_size=session.world_size, seed=session.seed,
                                  shuffle_buffer=params.shuffle_buffer, uneven=params.uneven_shards, keys=train_keys,
                                  augment=True, workers=params.loader_workers, on_error=params.on_error,
                                  verify=params.verify_shards)
        self.plan = self.reader.plan(0)
        if self.plan.padded or self.plan.dropped:
            session.log(f"shards split unevenly over {session.world_size} workers: "
                        f"{self.plan.padded} sample(s) padded, {self.plan.dropped} dropped per epoch")
        self.architecture = params.architecture(manifest, list(needs.modalities or manifest["modalities"]),
                                                needs.modality_heads)
        built = problem.build_model(self.architecture)
        self.restored = restorable(session, config)
        if self.restored is not None:  # a worker or the driver died: continue from the last checkpoint
            built.load_state_dict(torch.load(self.restored / WEIGHTS, weights_only=True, map_location="cpu"))
        self.model = session.prepare_model(
            built, find_unused_parameters=built.may_leave_parameters_unused or needs.partial_steps)
        self.core = getattr(self.model, "module", self.model)
        self.optimizer = make_optimizer(params, self.model.parameters())
        self.schedule = make_schedule(params, self.optimizer)
        self.first_epoch = 0
        if self.restored is not None:
            self._restore()
        self.context = TrainingContext(
            self.core, device, epochs=params.epochs, loss=problem.loss(params), background=problem.background(manifest),
            all_reduce_sum=session.all_reduce_sum, rank=session.rank, start_tasks=session.start_tasks, shards=shards,
            manifest=manifest, train_keys=train_keys, holdout_keys=holdout_keys, architecture=self.architecture,
            params=params, seed=session.seed, teachers=[Path(p) for p in config.get("teachers", [])],
            optimizer=self.optimizer)
        method.bind(self.context)
        self.diagnostics = PrototypeTracker() if params.diagnostics else None  # plain class means
        # the diagnostics look at every `every`-th training batch; where the method computes no prototypes, the class
        # sums of those batches' embeddings are the next epoch's (no pass of their own: the first epoch has none)
        self.every = max(1, round(1 / params.diagnostic_fraction))
        self.sampled_sums: ClassSums | None = None
        # a method's prototypes come from a random share of training batches before each epoch (as wide as the
        # diagnostics ask, which take them too): after the first, the inputs of every k-th batch of the epoch before,
        # kept in memory, rather than batches read again
        own = needs.prototype_fraction
        fraction = max(own, params.diagnostic_fraction) if own and params.diagnostics else own
        self.keep_every = max(1, round(1 / fraction)) if fraction else 0
        self.kept: KeptBatches | None = None

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """The method's preparation, the steps, the report and a checkpoint; the epoch's metrics."""
        started = time.perf_counter()
        class_sums = self.start_epoch(epoch)
        self.method.before_epoch(class_sums if self.needs.prototype_fraction > 0 else None)
        totals, trained = self.train_epoch(epoch)
        self.method.after_epoch()
        metrics = self.metrics(epoch, totals, trained, time.perf_counter() - started)
        self.session.progress(epoch + 1, self.params.epochs, metrics=metrics)
        self.session.log(_progress(epoch, self.params.epochs, metrics))
        self.save(epoch, metrics)
        return metrics

    def _restore(self) -> None:
        assert self.restored is not None
        device = self.session.device
        saved = torch.load(self.restored / TRAINING_STATE, weights_only=True, map_location=device)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        if (self.restored / METHOD_STATE).exists():
            self.method.load_state_dict(torch.load(self.restored / METHOD_STATE, weights_only=True,
                                                   map_location=device))
        self.first_epoch = saved["epoch"] + 1
        self.session.log(f"resumed from the checkpoint of epoch {self.first_epoch}")

    def start_epoch(self, epoch: int) -> ClassSums | None:
        """Make `epoch` current; fresh class sums over a subset of training batches where the method uses prototypes
        (as wide as the diagnostics ask, which take them too)."""
        self.context.epoch = epoch
        if not self.keep_every:  # the diagnostics' prototypes come from the epoch before's sampled batches
            return None
        batch_size, kept = self.params.batch_size, None
        if epoch > 0:  # the inputs of a share of the epoch before's batches (read again after a resume)
            kept = (self.kept.batches if self.kept is not None
                    else kept_batches(self.reader, epoch - 1, batch_size, self.keep_every))
        if kept:  # forwarded by the model as it is now
            found = pass_class_sums(self.core, kept, self.reader.manifest["num_classes"], self.session)
        else:  # before the first epoch, or a share too large to keep: a random share read from the shards
            found = subset_class_sums(self.core, self.reader, epoch, 1 / self.keep_every, batch_size, self.session)
        if self.diagnostics is not None:
            self.diagnostics.update(found.sums, found.counts)
        return found

    def train_epoch(self, epoch: int) -> tuple[EpochTotals, int]:
        """One pass over this rank's batches: (per-batch totals, samples trained on)."""
        params, method, device = self.params, self.method, self.session.device
        prototypes = self.diagnostics.prototypes if self.diagnostics is not None else {}
        self.model.train()
        totals, trained = EpochTotals(), 0  # samples (clips, in localization) this rank trained on
        batches = self.context.batches = math.ceil(self.plan.num_samples / params.batch_size)
        self.kept = KeptBatches(self.keep_every) if self.keep_every else None
        for step, (features, labels) in enumerate(self.reader.batches(epoch, params.batch_size)):
            self.session.progress(epoch + 1, params.epochs, step + 1, batches)
            if self.kept is not None:
                self.kept.offer(step, features, labels)
            trained += len(next(iter(features.values())))
            features = {m: x.to(device, non_blocking=True) for m, x in features.items()}
            labels = self.problem.labels(labels.to(device, non_blocking=True))
            self.context.batch, losses = step, []
            for substep, _ in enumerate(method.substeps()):  # one optimizer step, unless the method takes several
                out = self.model(method.prepare_inputs(features))
                loss, stats = method.loss(out, labels)
                if params.diagnostics and step < params.angle_batches and substep == 0:
                    for m, angle in gradient_angles(self.core, out, labels, prototypes).items():
                        totals.add(f"grad_angle_{m}", angle)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                stats.update(method.after_backward(out, labels))
                if params.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), params.grad_clip_norm)
                self.optimizer.step()
                losses.append(loss.detach())
                for key, value in stats.items():
                    totals.add(f"{params.method.name}_{key}", value)
            batch_results(totals, out, labels, torch.stack(losses).mean())
            if params.diagnostics and step % self.every == 0:
                batch_diagnostics(totals, out, labels, prototypes)
                if self.needs.prototype_fraction == 0:
                    self.sampled_sums = add_class_sums(self.sampled_sums, out.embeddings, labels,
                                                       self.reader.manifest["num_classes"])
        return totals, trained

    def metrics(self, epoch: int, totals: EpochTotals, trained: int, seconds: float) -> dict[str, float]:
        """The epoch's metrics over all ranks; steps the learning-rate schedule and the diagnostics' prototypes."""
        session, name, device = self.session, self.params.method.name, self.session.device
        if self.sampled_sums is not None:  # every rank sampled its first batch, so every rank has sums
            sums = {m: session.all_reduce_sum(s) for m, s in self.sampled_sums.sums.items()}
            self.diagnostics.update(sums, session.all_reduce_sum(self.sampled_sums.counts))
            self.sampled_sums = None
        lr = self.optimizer.param_groups[0]["lr"]
        self.schedule.step()
        metrics = {"epoch": epoch, **totals.means(session.all_reduce_sum), "lr": lr,
                   **{f"{name}_{k}": v for k, v in self.method.epoch_metrics().items()}}
        trained = int(session.all_reduce_sum(torch.tensor(float(trained), device=device)).item())
        metrics.update(epoch_seconds=seconds, samples_per_s=trained / seconds, train_samples=trained,
                       padded_samples=self.plan.padded, dropped_samples=self.plan.dropped,
                       peak_memory_mb=peak_memory_mb(device))
        if self.params.on_error == "skip":  # shard reads cut short this epoch, over all ranks
            reads = session.all_reduce_sum(torch.tensor(float(self.reader.corrupt_reads), device=device))
            metrics["corrupt_shard_reads"], self.reader.corrupt_reads = int(reads.item()), 0
        if self.restored is not None and epoch == self.first_epoch:
            metrics["resumed_at_epoch"] = self.first_epoch
        return metrics

    def save(self, epoch: int, metrics: dict[str, float]) -> None:
        """Report the epoch with a checkpoint (model, training and method state), written by rank 0."""
        with tempfile.TemporaryDirectory() as tmp:
            if self.session.rank == 0:
                save_classifier(Path(tmp), self.core, self.architecture)
                if self.method.state_dict():  # e.g. PMR's prototypes
                    torch.save(self.method.state_dict(), Path(tmp) / METHOD_STATE)
                torch.save({"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                            "epoch": epoch, "config": config_digest(self.config)}, Path(tmp) / TRAINING_STATE)
            self.session.report(metrics, tmp if self.session.rank == 0 else None)


def _progress(epoch: int, epochs: int, metrics: dict[str, float]) -> str:
    shown = [k for k in metrics if k.startswith(("head_accuracy_", "prototype_accuracy_")) or k == "rho"]
    extra = " ".join(f"{k.replace('_accuracy', '')} {metrics[k]:.3f}" for k in shown)
    return (f"epoch {epoch + 1}/{epochs} loss {metrics['loss']:.4f} train_acc {metrics['train_accuracy']:.4f} "
            f"{extra} ({metrics['samples_per_s']:.0f} samples/s)")
