"""Diagnosing & Re-learning (Wei et al., ECCV 2024), as the official code does it.

After every `reinit_epoch`-th epoch (at most `reinit_num` times), each modality's learning state is diagnosed
from the separability of its embeddings: k-means with as many clusters as classes on the training samples and on
held-out ones (features min-max scaled to [-1, 1] first), each clustering's purity against the labels. A modality
whose training purity runs away from its held-out purity has learnt its training data rather than its task: its
encoder is softly re-initialised, theta <- w theta_init + (1 - w) theta, with w = tanh(lambda |train purity -
held-out purity|). Rank 0 diagnoses and the weights reach every rank, so replicas stay equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from mmflow.engine import Params

from ..base import BalanceMethod, Needs, TrainingContext, method

if TYPE_CHECKING:
    import torch


class ReLearningParams(Params):
    """Diagnosing & Re-learning (Wei et al., ECCV 2024): softly re-initialise encoders that overfit their data."""

    name: Literal["relearning"] = "relearning"
    move_lambda: float = Field(3.0, ge=0, description="lambda: re-initialisation weight tanh(lambda * |train purity "
                               "- held-out purity|)")
    reinit_epoch: int = Field(20, ge=1, description="diagnose after every reinit_epoch-th epoch (0-based, not 0)")
    reinit_num: int = Field(3, ge=0, description="diagnose at most this many times")
    holdout: float = Field(0.1, gt=0, lt=1, description="share of training samples held out to diagnose on "
                           "(official CREMA-D split: 744 of 6,698)")


def purity(labels: torch.Tensor, clusters: torch.Tensor) -> float:
    """Share of samples whose cluster's most common label is their own."""
    import torch

    return sum(int(torch.bincount(labels[clusters == c]).max()) for c in clusters.unique()) / len(labels)


def cluster_purity(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Purity of k-means (k = classes, seeded, 10 starts) on the embeddings scaled to [-1, 1] per feature."""
    import torch
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import MinMaxScaler

    scaled = MinMaxScaler(feature_range=(-1, 1)).fit_transform(embeddings.double().numpy())
    clusters = KMeans(n_clusters=num_classes, random_state=0, n_init=10).fit_predict(scaled)
    return purity(labels, torch.as_tensor(clusters))


def reinit_weight(train_purity: float, holdout_purity: float, move_lambda: float) -> float:
    """tanh(lambda * |train purity - held-out purity|)."""
    import math

    return math.tanh(move_lambda * abs(train_purity - holdout_purity))


@method("relearning", ReLearningParams)
class ReLearning(BalanceMethod):
    """Diagnose each modality's embeddings by clustering; pull encoders back toward their initial weights."""

    params: ReLearningParams

    @property
    def needs(self) -> Needs:
        return Needs(holdout=self.params.holdout)

    def setup(self) -> None:
        self.initial: dict[str, torch.Tensor] | None = None  # the encoders' weights before training
        self.diagnosed = 0
        self.found: dict[str, float] = {}

    def bind(self, context: TrainingContext) -> None:
        super().bind(context)
        if self.initial is None:  # else restored with the rest of the method's state
            self.initial = {name: p.detach().clone() for name, p in context.model.encoders.named_parameters()}

    def after_epoch(self) -> None:
        import torch

        context, params = self.context, self.params
        epoch = context.epoch
        if epoch == 0 or epoch % params.reinit_epoch or self.diagnosed >= params.reinit_num:
            return
        self.diagnosed += 1
        purities = torch.zeros(2, len(self.modalities), dtype=torch.float64, device=context.device)
        if context.rank == 0:  # one diagnosis, which every rank then applies
            for row, keys in enumerate((context.train_keys, context.holdout_keys)):
                embeddings, labels = self._embeddings(keys)
                num_classes = context.manifest["num_classes"]
                purities[row] = torch.tensor([cluster_purity(embeddings[m], labels, num_classes)
                                              for m in self.modalities], dtype=torch.float64)
        purities = context.all_reduce_sum(purities)
        state = context.model.encoders.state_dict(keep_vars=True)
        for i, m in enumerate(self.modalities):
            weight = reinit_weight(float(purities[0, i]), float(purities[1, i]), params.move_lambda)
            self.found.update({f"purity_train_{m}": float(purities[0, i]),
                               f"purity_holdout_{m}": float(purities[1, i]), f"weight_{m}": weight})
            with torch.no_grad():
                for name, initial in self.initial.items():
                    if name.startswith(f"{m}."):
                        state[name].mul_(1 - weight).add_(initial.to(state[name].device), alpha=weight)

    def _embeddings(self, keys: list[str] | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every modality's embeddings of `keys` (eval mode, no gradients) and their labels."""
        import torch

        from ...data.shards import ShardReader

        context = self.context
        model, found, labels = context.model, {m: [] for m in self.modalities}, []
        model.eval()
        try:
            reader = ShardReader(context.shards, keys=keys, shuffle=False, pad=False)
            with torch.no_grad():
                for features, batch_labels in reader.batches(0, context.params.batch_size):
                    out = model({m: x.to(context.device) for m, x in features.items()})
                    for m in self.modalities:
                        found[m].append(out.embeddings[m].cpu())
                    labels.append(batch_labels)
        finally:
            model.train()
        return {m: torch.cat(e) for m, e in found.items()}, torch.cat(labels)

    def epoch_metrics(self) -> dict[str, float]:
        found, self.found = self.found, {}
        return found

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "diagnosed": self.diagnosed}
