"""Naive joint training: the problem's loss on the fused logits, the baseline every method is compared with."""

from __future__ import annotations

from typing import Literal

from mmflow.engine import Params

from ..base import BalanceMethod, method


class NaiveParams(Params):
    """Joint training with cross-entropy on the fused logits."""

    name: Literal["naive"] = "naive"


@method("naive", NaiveParams, localization=True)
class Naive(BalanceMethod):
    """The base class's hooks as they are."""
