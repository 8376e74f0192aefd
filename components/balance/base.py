"""The interface every balancing method implements: hooks the training loop calls.

A method reads only the model's `MultimodalOutput` (fused logits, embeddings, per-modality
logits where the fusion splits) and, through `LoopState`, shared training state such as the
class prototypes. The defaults are plain joint training: cross-entropy on the fused logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from ..models.multimodal import MultimodalClassifier, MultimodalOutput
    from .gblend import ProbeLosses

Stats = dict[str, torch.Tensor]  # per-batch scalars, averaged over the epoch by the loop


@dataclass
class LoopState:
    """What hooks may read from the training loop."""

    model: MultimodalClassifier  # unwrapped (no DDP), for parameter access
    modalities: list[str]
    num_classes: int
    device: torch.device
    epochs: int = 0
    epoch: int = -1
    # Per-class embedding sums and sample counts of each modality over a random subset of
    # training batches (all ranks), taken before every epoch with batch statistics (normalized as in a
    # training step) when a method's `prototype_fraction` asks for it; turn them into prototypes with
    # update_prototypes.
    subset_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    subset_counts: torch.Tensor | None = None
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor  # over ranks
    # Localization trains on segments: the background class, which prototype penalties leave out.
    background: int | None = None
    # The loss on the fused logits of plain training (localization may use AVEL's original one).
    fused_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    # Probe trainings from the current model, one per head (a modality or "fused"), for
    # methods that estimate from them (G-Blend): heads -> their losses before and after.
    run_probes: Callable[[list[str]], dict[str, ProbeLosses]] | None = None


class BalanceMethod:
    """Plain joint training; subclasses override the hooks they need."""

    #: fraction of training batches whose class means the loop computes before each epoch (0: none)
    prototype_fraction: float = 0.0
    #: per-modality logits the model needs: "fusion" (only where the fusion splits), "unsplit"
    #: (add linear heads where it does not) or "own" (every modality its own linear head)
    modality_heads: Literal["fusion", "unsplit", "own"] = "fusion"
    #: share of training samples the loop holds out from training, for the method's own validation
    holdout: float = 0.0

    def __init__(self, params: Any, modalities: list[str], seed: int) -> None:
        self.params = params
        self.modalities = list(modalities)
        self.seed = seed
        self.setup()

    def setup(self) -> None:
        """Check the params against the data's modalities (ValueError naming the problem) and set up state."""

    def check(self, fusion: str) -> None:
        """Raise ValueError naming the reason if this method cannot work with `fusion`."""

    def model_modalities(self) -> list[str]:
        """The modalities the model is built with."""
        return self.modalities

    def before_epoch(self, state: LoopState) -> None:
        """Called before each epoch (the subset sums are already fresh)."""

    def prepare_inputs(self, features: dict[str, torch.Tensor], state: LoopState) -> dict[str, torch.Tensor]:
        """Transform a training batch's inputs before the forward pass."""
        return features

    def loss(self, out: MultimodalOutput, labels: torch.Tensor, state: LoopState) -> tuple[torch.Tensor, Stats]:
        """The batch loss to backpropagate and per-batch statistics."""
        return state.fused_loss(out.logits, labels), {}

    def after_backward(self, out: MultimodalOutput, labels: torch.Tensor, state: LoopState) -> Stats:
        """Adjust gradients after backward, before the optimizer step."""
        return {}

    def epoch_metrics(self) -> dict[str, float]:
        """Extra metrics for the epoch just trained (e.g. the weights in use)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State saved with each checkpoint (tensors and plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned (after a worker failure or a resumed run)."""
        for name, value in state.items():
            setattr(self, name, value)
