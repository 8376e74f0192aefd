"""Uni-modal training: one modality's encoder and a linear head, the reference each branch aims at."""

from __future__ import annotations

from .base import BalanceMethod
from .config import UnimodalParams


class Unimodal(BalanceMethod):
    """Builds the model with the chosen modality only; the loss is plain cross-entropy."""

    params: UnimodalParams

    def setup(self) -> None:
        if self.params.modality not in self.modalities:
            raise ValueError(f"method unimodal: modality '{self.params.modality}' is not in the data "
                             f"(it has: {', '.join(self.modalities)})")

    def model_modalities(self) -> list[str]:
        return [self.params.modality]
