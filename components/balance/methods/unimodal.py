"""Uni-modal training: one modality's encoder and a linear head, the reference each branch aims at."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmflow.engine import Params

from ..base import BalanceMethod, Needs, method


class UnimodalParams(Params):
    """Train one modality alone (its encoder and a linear head): the per-modality upper reference."""

    name: Literal["unimodal"] = "unimodal"
    modality: str = Field(description="the modality to keep, e.g. gray")


@method("unimodal", UnimodalParams)
class Unimodal(BalanceMethod):
    """Builds the model with the chosen modality only; the loss is plain cross-entropy."""

    params: UnimodalParams

    def setup(self) -> None:
        if self.params.modality not in self.modalities:
            raise ValueError(f"method unimodal: modality '{self.params.modality}' is not in the data "
                             f"(it has: {', '.join(self.modalities)})")

    @property
    def needs(self) -> Needs:
        return Needs(modalities=(self.params.modality,))
