"""What the shared training loop trains: a problem gives it the params, labels, model and loss.

Classification: one label per sample. Event localization: a label per segment; its model treats
segments as samples, so labels are flattened to match, and the manifest's background class
reaches the balancing method (`TrainingContext.background`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from mmflow.engine import Choice

from ..models.build import build_classifier
from ..models.fusions import FUSIONS
from ..models.localization_fusions import LOCALIZATION_FUSIONS
from ..models.multimodal import MultimodalClassifier
from .training_params import TrainClassifierParams, TrainLocalizationParams

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Classification:
    """Samples with one label each, cross-entropy on the fused logits, any registered classifier fusion."""

    params = TrainClassifierParams

    def labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The labels the loss compares logits with, one per row of logits."""
        return labels.reshape(-1)

    def build_model(self, architecture: dict) -> MultimodalClassifier:
        """A fresh model for `params.architecture(...)`."""
        return build_classifier(architecture)

    def loss(self, params: TrainClassifierParams) -> Loss:
        """The loss on fused logits that plain training uses."""
        return F.cross_entropy

    def background(self, manifest: dict) -> int | None:
        """The class that prototype penalties leave out (none)."""
        return None

    def fusion(self, params: TrainClassifierParams) -> Choice:
        """The registered fusion whose capabilities a method reads."""
        return FUSIONS.of(params.fusion)


class Localization(Classification):
    """Per-segment labels (events and background); cross-entropy or AVEL's original margin loss."""

    params = TrainLocalizationParams

    def loss(self, params: TrainLocalizationParams) -> Loss:
        if params.loss == "avel_margin":
            from ..models.localization import avel_margin_loss

            return avel_margin_loss
        return F.cross_entropy

    def background(self, manifest: dict) -> int | None:
        return manifest["background"]

    def fusion(self, params: TrainLocalizationParams) -> Choice:
        return LOCALIZATION_FUSIONS.of(params.fusion)


PROBLEMS = {"classification": Classification(), "localization": Localization()}


def problem_of(config: dict) -> Classification:
    """The problem a training config names (`problem`; classification if it names none)."""
    return PROBLEMS[config.get("problem", "classification")]
