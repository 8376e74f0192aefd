"""Gradient-Blending in one package: the method (method.py), its probe trainings (probes.py), the weights from
their losses (estimate.py) and the `gblend.estimate` step that computes offline weights (estimate_step.py)."""

from . import method

__all__ = ["method"]
