"""Build the balancing method a workflow's `method:` block names."""

from __future__ import annotations

from .aux_loss import AuxLoss
from .base import BalanceMethod
from .config import (AuxLossParams, GBlendParams, ModalityDropoutParams, NaiveParams, OGMGEParams, PMRParams,
                     UnimodalParams)
from .gblend import GBlend
from .modality_dropout import ModalityDropout
from .ogm_ge import OGMGE
from .pmr import PMR
from .unimodal import Unimodal

METHODS: dict[type, type[BalanceMethod]] = {
    NaiveParams: BalanceMethod,
    UnimodalParams: Unimodal,
    PMRParams: PMR,
    OGMGEParams: OGMGE,
    ModalityDropoutParams: ModalityDropout,
    AuxLossParams: AuxLoss,
    GBlendParams: GBlend,
}


def build_method(params: object, modalities: list[str], fusion: str, seed: int) -> BalanceMethod:
    """The method for `params`, checked against the data's modalities and the model's fusion."""
    method = METHODS[type(params)](params, modalities, seed)
    method.check(fusion)
    return method
