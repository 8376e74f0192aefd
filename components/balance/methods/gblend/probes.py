"""G-Blend probe trainings (Algorithm 1): from one model, train each head alone and measure its losses.

A probe for modality m trains that modality's encoder and own head on CE(head_m); the fused
probe trains the encoders and the fusion on the fused CE. Each probe is independent, so the
k+1 probes run as parallel tasks (`start_tasks`). Data: the blend-validation keys are held out
of all training; the probes train on a seeded `probe_fraction` of the rest (whole shards, so a
probe reads only those), and their training loss is measured on as many of those samples as
the blend-validation set has. Both measuring sets are read once into memory.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ....data.shards import ShardReader
from ....models.build import build_classifier
from ....models.multimodal import MultimodalClassifier
from ....tasks.optim import make_optimizer
from ....tasks.training_params import ClassifierParams
from ...base import TrainingContext
from .estimate import FUSED_HEAD, BlendEstimateParams, ProbeLosses

HeadForward = Callable[[dict[str, torch.Tensor]], torch.Tensor]
Samples = tuple[dict[str, torch.Tensor], torch.Tensor]  # features by modality, labels: held in memory


def load_samples(train_dir: Path, keys: list[str], batch_size: int = 1024) -> Samples:
    """The given samples read once into memory (blend-validation and T' are measured twice per probe)."""
    batches = list(ShardReader(train_dir, keys=keys, shuffle=False, pad=False).batches(0, batch_size))
    return ({m: torch.cat([features[m] for features, _ in batches]) for m in batches[0][0]},
            torch.cat([labels for _, labels in batches]))


def probe_keys(manifest: dict, train_keys: list[str], fraction: float, seed: int, draw: int) -> list[str]:
    """A seeded `fraction` of the training keys in whole shards (cheap to read; shards hold shuffled samples)."""
    allowed = set(train_keys)
    shards = [[k for k in shard["keys"] if k in allowed] for shard in manifest["shards"]]
    random.Random(f"gblend-probe:{seed}:{draw}").shuffle(shards)
    picked: list[str] = []
    for keys in shards:
        if len(picked) >= fraction * len(train_keys):
            break
        picked += keys
    return picked


def probe_configs(heads: list[str], model: MultimodalClassifier, architecture: dict[str, Any], train_dir: Path,
                  manifest: dict, train_keys: list[str], holdout: Samples, estimate: BlendEstimateParams,
                  classifier: ClassifierParams, seed: int, draw: int) -> list[dict[str, Any]]:
    """One task config per head; `draw` (e.g. the epoch) redraws the probes' training subset."""
    keys = probe_keys(manifest, train_keys, estimate.probe_fraction, seed, draw)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    common = {"architecture": architecture, "state": state, "train_dir": str(train_dir), "probe_keys": keys,
              "measure": load_samples(train_dir, keys[:len(holdout[1])]), "holdout": holdout,
              "epochs": estimate.probe_epochs, "seed": seed + draw,
              "classifier": classifier.model_dump(include=set(ClassifierParams.model_fields))}
    return [{**common, "head": head} for head in heads]


def run_probe(config: dict[str, Any], device: torch.device) -> dict[str, float]:
    """Train one head's probe from the given weights; its mean losses on T' and V before and after."""
    classifier = ClassifierParams(**config["classifier"])
    torch.manual_seed(config["seed"])
    model = build_classifier(config["architecture"])
    model.load_state_dict(config["state"])
    model.to(device)
    forward = head_forward(model, config["head"])

    def measure(samples: Samples) -> float:
        return mean_loss(forward, model, samples, classifier.batch_size, device)

    train_before, val_before = measure(config["measure"]), measure(config["holdout"])
    parameters = head_parameters(model, config["head"])
    optimizer = make_optimizer(classifier, parameters)
    reader = ShardReader(Path(config["train_dir"]), keys=config["probe_keys"], seed=config["seed"],
                         shuffle_buffer=classifier.shuffle_buffer)
    model.train()
    for epoch in range(config["epochs"]):
        for features, labels in reader.batches(epoch, classifier.batch_size):
            features = {m: x.to(device) for m, x in features.items()}
            loss = F.cross_entropy(forward(features), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if classifier.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, classifier.grad_clip_norm)
            optimizer.step()
    return vars(ProbeLosses(train_before, val_before, measure(config["measure"]), measure(config["holdout"])))


def head_forward(model: MultimodalClassifier, head: str) -> HeadForward:
    """Logits of one head: the fused output, or a modality's own head on its own encoder only."""
    if head == FUSED_HEAD:
        return lambda features: model(features).logits
    return lambda features: model.heads[head](model.encoders[head](features[head]))


def head_parameters(model: MultimodalClassifier, head: str) -> list[torch.nn.Parameter]:
    """What a probe trains: a modality's encoder and head, or everything but the modality heads (fused)."""
    if head == FUSED_HEAD:
        own_heads = {id(p) for p in model.heads.parameters()}
        return [p for p in model.parameters() if id(p) not in own_heads]
    return [*model.encoders[head].parameters(), *model.heads[head].parameters()]


@torch.no_grad()
def mean_loss(forward: HeadForward, model: MultimodalClassifier, samples: Samples, batch_size: int,
              device: torch.device) -> float:
    """Mean cross-entropy of one head over in-memory samples, in eval mode."""
    was_training = model.training
    model.eval()
    features, labels = samples
    total = 0.0
    for start in range(0, labels.numel(), batch_size):
        batch = {m: x[start:start + batch_size].to(device) for m, x in features.items()}
        total += float(F.cross_entropy(forward(batch), labels[start:start + batch_size].to(device), reduction="sum"))
    model.train(was_training)
    return total / max(labels.numel(), 1)


def probe_losses(results: list[dict[str, float]], heads: list[str]) -> dict[str, ProbeLosses]:
    """Task results (in head order) as ProbeLosses by head."""
    return {head: ProbeLosses(**result) for head, result in zip(heads, results)}


class OnlineProbes:
    """Online G-Blend's probes from the current model: rank 0 runs them as side tasks on the held-out data,
    and every rank gets their losses."""

    def __init__(self, context: TrainingContext, params: BlendEstimateParams) -> None:
        self.context, self.params = context, params
        # measured by the probes rank 0 launches, read once
        self.holdout = load_samples(context.shards, context.holdout_keys) if context.rank == 0 else None

    def start(self, heads: list[str], draw: int) -> Callable[[], dict[str, ProbeLosses]]:
        """Start each head's probe from the model as it is now (rank 0); returns what waits for their losses, which
        every rank calls at the same point. `draw` (the epoch) redraws the probes' training subset."""
        context = self.context
        results: Callable[[], list[Any]] = list
        if context.rank == 0:
            configs = probe_configs(heads, context.model, context.architecture, context.shards, context.manifest,
                                    context.train_keys, self.holdout, self.params, context.params, context.seed,
                                    draw=draw)
            results = context.start_tasks(run_probe, configs)

        def losses() -> dict[str, ProbeLosses]:
            found = torch.zeros(len(heads), 4, dtype=torch.float64, device=context.device)
            if context.rank == 0:
                by_head = probe_losses(results(), heads)
                found += torch.tensor([dataclasses.astuple(by_head[h]) for h in heads], dtype=torch.float64)
            context.all_reduce_sum(found)  # a broadcast: the other ranks hold zeros
            return {h: ProbeLosses(*row.tolist()) for h, row in zip(heads, found)}

        return losses
