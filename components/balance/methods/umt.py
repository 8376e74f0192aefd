"""UMT: Uni-Modal Teacher (Du et al., ICML 2023), as BalanceBenchmark's code does it.

Each modality's encoder of the multimodal model is distilled from the encoder of a uni-modal model trained
first (a `train.classifier` step with `method: unimodal`, wired as the step's `teachers` input): the loss is
CE(fused) + scaling * sum_m MSE(z_m, t_m), t_m the frozen teacher's embedding of the same input. So every
encoder keeps learning the features it would learn alone, however strong the other modality is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..base import BalanceMethod, Stats, TrainingContext, Windowed, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class UMTParams(Windowed):
    """UMT (Du et al., ICML 2023): distil each encoder from a uni-modal model's (the step's teachers)."""

    name: Literal["umt"] = "umt"
    scaling: float = Field(10.0, ge=0, description="weight of the embedding distillation loss (BalanceBenchmark: 10)")


@method("umt", UMTParams)
class UMT(BalanceMethod):
    """Fused cross-entropy plus scaling * sum_m MSE(student embedding, frozen uni-modal teacher embedding)."""

    params: UMTParams
    takes_teachers = True

    def setup(self) -> None:
        self.teachers: dict[str, torch.nn.Module] = {}  # each modality's frozen uni-modal encoder
        self.targets: dict[str, torch.Tensor] = {}  # the teachers' embeddings of the batch being trained

    def bind(self, context: TrainingContext) -> None:
        from ...models.build import load_classifier

        super().bind(context)
        for path in context.teachers:
            model, _ = load_classifier(path)
            if len(model.modalities) != 1 or model.modalities[0] not in self.modalities:
                raise ValueError(f"method umt: teacher {path} has modalities {', '.join(model.modalities)}; each "
                                 f"teacher is a uni-modal model of one of {', '.join(self.modalities)} "
                                 "(method: unimodal)")
            (modality,) = model.modalities
            if modality in self.teachers:
                raise ValueError(f"method umt: two teachers of modality {modality}")
            # frozen, and in eval mode so that its batch statistics stay those it was trained with
            self.teachers[modality] = model.encoders[modality].to(context.device).eval().requires_grad_(False)
        if missing := [m for m in self.modalities if m not in self.teachers]:
            raise ValueError(f"method umt: no teacher for modality {', '.join(missing)}: wire a uni-modal model of "
                             "each modality to inputs.teachers")

    def prepare_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        self.targets = {}
        if self.params.active(self.context.epoch):
            with torch.no_grad():
                self.targets = {m: teacher(features[m]) for m, teacher in self.teachers.items()}
        return features

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        import torch.nn.functional as F

        loss, stats = self.context.loss(out.logits, labels), {}
        for m, target in self.targets.items():
            if target.shape != out.embeddings[m].shape:
                raise ValueError(f"method umt: the teacher of {m} gives embeddings of shape {tuple(target.shape[1:])}, "
                                 f"the model {tuple(out.embeddings[m].shape[1:])}: train both with one embedding_dim")
            stats[f"distill_{m}"] = F.mse_loss(out.embeddings[m], target)
            loss = loss + self.params.scaling * stats[f"distill_{m}"]
        return loss, {k: v.detach() for k, v in stats.items()}
