"""The fusions of the event-localization model, by name with their params and capabilities.

Each combines the audio and the visual BiLSTM output of every segment into per-segment logits:
a builder `(params, dims, num_classes) -> module` over the embeddings, as a late classifier fusion
is (capability `splits`: its logits decompose by modality). Packages add more through the
entry-point group `mmflow.localization_fusions`. Light like fusions.py: the builders import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from mmflow.engine import ChoiceTable, Params

if TYPE_CHECKING:
    from torch import nn

LOCALIZATION_FUSIONS = ChoiceTable("localization fusion", "mmflow.localization_fusions")


class ConcatParams(Params):
    """A linear classifier on both streams; its per-modality logits split as for classification."""

    name: Literal["concat"] = "concat"


@LOCALIZATION_FUSIONS.register("concat", ConcatParams, splits=True)
def concat(params: ConcatParams, dims: dict[str, int], num_classes: int) -> nn.Module:
    """Concatenation fusion."""
    from .fusion import ConcatFusion

    return ConcatFusion(dims, num_classes)


class DMRNParams(Params):
    """Dual multimodal residual network (AVEL): residual blocks mixing both streams, then a linear classifier."""

    name: Literal["dmrn"] = "dmrn"
    blocks: int = Field(1, ge=1, le=8, description="residual blocks m = 0.5 (U_a(h_a) + U_v(h_v))")


@LOCALIZATION_FUSIONS.register("dmrn", DMRNParams, splits=False)
def dmrn(params: DMRNParams, dims: dict[str, int], num_classes: int) -> nn.Module:
    """DMRN fusion."""
    from .fusion import DMRNFusion

    return DMRNFusion(dims, num_classes, params.blocks)
