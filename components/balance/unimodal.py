"""Uni-modal training: one modality's encoder and a linear head, the reference each branch aims at."""

from __future__ import annotations

from .base import BalanceMethod
from .config import UnimodalParams


class Unimodal(BalanceMethod):
    """Builds the model with the chosen modality only; the loss is plain cross-entropy."""

    params: UnimodalParams

    def __init__(self, params: UnimodalParams, modalities: list[str], num_classes: int, seed: int = 0) -> None:
        super().__init__(params, modalities, num_classes, seed)
        if params.modality not in modalities:
            raise ValueError(f"method unimodal: modality '{params.modality}' is not in the data "
                             f"(it has: {', '.join(modalities)})")

    def model_modalities(self) -> list[str]:
        return [self.params.modality]
