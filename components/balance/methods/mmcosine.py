"""MMCosine: Multi-Modal Cosine loss (Xu et al., ICASSP 2023), as the official code does it.

Training logits are s * sum_m cos(z_m, W_m^c) over classes c: each modality's embedding and each class's row of
that modality's block of the fusion's linear layer are L2-normalised, so no modality wins by the norms of its
features or weights; no bias. The model itself is left as it is: its fused logits (the linear layer on the raw
embeddings) are what evaluation reads, as the official code's validation does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from mmflow.engine import Params

from ..base import BalanceMethod, Stats, TrainingContext, method

if TYPE_CHECKING:
    import torch

    from ...models.multimodal import MultimodalOutput


class MMCosineParams(Params):
    """MMCosine (Xu et al., ICASSP 2023): train on scaled per-modality cosines of embeddings and class weights."""

    name: Literal["mmcosine"] = "mmcosine"
    scaling: float = Field(10.0, gt=0, description="s: the cosines' scale (official default 10; BalanceBenchmark 15)")


def cosine_logits(embeddings: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each modality's cos(z_m, W_m^c) per sample and class: normalized embeddings times normalized class rows."""
    import torch.nn.functional as F

    return {m: F.normalize(z, dim=1) @ F.normalize(weights[m], dim=1).T for m, z in embeddings.items()}


@method("mmcosine", MMCosineParams)
class MMCosine(BalanceMethod):
    """Cross-entropy on s * sum_m cos(z_m, W_m^c)."""

    params: MMCosineParams

    @classmethod
    def check(cls, params: MMCosineParams, model: Any) -> None:
        from ...models.fusions import FUSIONS

        if not FUSIONS.of(model.fusion).capabilities["splits"]:
            raise ValueError(f"method mmcosine normalizes each modality's block of the fusion's linear layer, but "
                             f"the logits of {model.fusion.name} are no linear layer over each modality's "
                             "embedding: use concat, sum or mmtm")

    def bind(self, context: TrainingContext) -> None:
        super().bind(context)
        if not hasattr(context.model.fusion, "modality_weights"):  # a plugin fusion that splits another way
            raise ValueError(f"method mmcosine needs each modality's weights from the fusion (modality_weights()), "
                             f"which {self.fusion.name} does not give")

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        cosines = cosine_logits({m: out.embeddings[m] for m in self.modalities},
                                self.context.model.fusion.modality_weights())
        logits = self.params.scaling * sum(cosines.values())
        stats = {f"cos_{m}": c.detach().gather(1, labels[:, None]).mean() for m, c in cosines.items()}
        return self.context.loss(logits, labels), stats
