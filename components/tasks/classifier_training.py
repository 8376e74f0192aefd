"""Per-worker training loop and evaluation of the multimodal classifier (runs on Ray workers)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mmflow.engine import TrainSession

from ..data.shards import ShardReader
from ..models.multimodal import MultimodalClassifier, build_classifier, load_classifier, save_classifier
from .classification import TrainClassifierParams


def make_optimizer(params: TrainClassifierParams, parameters: Any) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdaGrad, as the papers compare."""
    if params.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    if params.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.Adagrad(parameters, lr=params.lr, weight_decay=params.weight_decay)


def make_schedule(params: TrainClassifierParams, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule."""
    if params.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, params.lr_step_size, params.lr_gamma)
    if params.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, params.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def train_worker(session: TrainSession, config: dict[str, Any]) -> None:
    """One worker's loop: its shards, DDP model, per-epoch metrics (summed over ranks) and checkpoint."""
    params = TrainClassifierParams(**config["params"])
    torch.manual_seed(session.seed)
    reader = ShardReader(Path(config["train"]), rank=session.rank, world_size=session.world_size,
                         seed=session.seed, shuffle_buffer=params.shuffle_buffer, uneven=params.uneven_shards)
    plan = reader.plan(0)
    if plan.padded or plan.dropped:
        session.log(f"shards split unevenly over {session.world_size} workers: "
                    f"{plan.padded} sample(s) padded, {plan.dropped} dropped per epoch")
    architecture = {
        "modalities": {m: reader.manifest["modalities"][m]["shape"] for m in reader.modalities},
        "num_classes": reader.manifest["num_classes"],
        "hidden": params.hidden, "embedding_dim": params.embedding_dim, "fusion": params.fusion,
    }
    device = session.device
    model = session.prepare_model(build_classifier(architecture))
    core = getattr(model, "module", model)
    optimizer = make_optimizer(params, model.parameters())
    schedule = make_schedule(params, optimizer)

    for epoch in range(params.epochs):
        model.train()
        started = time.perf_counter()
        totals = torch.zeros(3, device=device)  # loss sum, correct, count
        for features, labels in reader.batches(epoch, params.batch_size):
            features = {m: x.to(device, non_blocking=True) for m, x in features.items()}
            labels = labels.to(device, non_blocking=True)
            out = model(features)
            loss = F.cross_entropy(out.logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                totals += torch.stack([loss.detach() * labels.numel(),
                                       (out.logits.argmax(1) == labels).sum(), torch.tensor(labels.numel(), device=device)])
        lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        seconds = time.perf_counter() - started
        loss_sum, correct, count = session.all_reduce_sum(totals).tolist()
        metrics = {"epoch": epoch, "loss": loss_sum / count, "train_accuracy": correct / count, "lr": lr,
                   "samples_per_s": count / seconds, "epoch_seconds": seconds,
                   "padded_samples": plan.padded, "dropped_samples": plan.dropped}
        session.log(f"epoch {epoch + 1}/{params.epochs} loss {metrics['loss']:.4f} "
                    f"train_acc {metrics['train_accuracy']:.4f} ({metrics['samples_per_s']:.0f} samples/s)")
        with tempfile.TemporaryDirectory() as tmp:
            if session.rank == 0:
                save_classifier(Path(tmp), core, architecture)
            session.report(metrics, tmp if session.rank == 0 else None)


@torch.no_grad()
def class_means(model: MultimodalClassifier, reader: ShardReader, batch_size: int) -> dict[str, torch.Tensor]:
    """Per-class mean embedding of each modality over a reader's samples (a class never seen stays 0)."""
    num_classes = reader.manifest["num_classes"]
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(num_classes)
    for features, labels in reader.batches(0, batch_size):
        counts += torch.bincount(labels, minlength=num_classes)
        for m, z in model(features).embeddings.items():
            sums.setdefault(m, torch.zeros(num_classes, z.shape[1])).index_add_(0, labels, z)
    return {m: s / counts.clamp(min=1)[:, None] for m, s in sums.items()}


@torch.no_grad()
def evaluate(model_dir: Path, train_dir: Path, test_dir: Path, batch_size: int) -> dict[str, float]:
    """Fused, per-modality head and per-modality prototype accuracy over every test sample.

    Prototypes are the class-mean training embeddings of the trained model (nearest-centroid).
    """
    model, architecture = load_classifier(model_dir)
    prototypes = class_means(model, ShardReader(train_dir, shuffle=False), batch_size)
    reader = ShardReader(test_dir, shuffle=False)
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
    metrics["test_samples"] = total
    return metrics
