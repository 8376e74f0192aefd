"""The contract of a balancing method: what it needs from the training loop, and the hooks the loop calls.

A method is one module: its params (a `Params` with a `name` literal) and a `BalanceMethod`
subclass registered with `@method(name, params)`. It declares what it needs as data (`Needs`, read
before the model and the data are set up), is bound to a `TrainingContext` before the first epoch,
and reads only the model's `MultimodalOutput`. The defaults are plain joint training: the problem's
loss on the fused logits. Method modules stay light (torch is imported inside functions) because
`mmflow validate` reads their params; packages add methods through the entry-point group
`mmflow.methods`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from pydantic import Field, model_validator

from mmflow.engine import Choice, ChoiceTable, Params

from ..models.fusions import FUSIONS

if TYPE_CHECKING:
    import torch

    from ..models.multimodal import MultimodalClassifier, MultimodalOutput

METHODS = ChoiceTable("method", "mmflow.methods")
Stats = dict[str, "torch.Tensor"]  # per-batch scalars, averaged over the epoch by the loop


def method(name: str, params: type[Params], *, localization: bool = False) -> Callable[[type], type]:
    """Register the decorated `BalanceMethod` subclass as `name`; `localization`: it also trains event
    localization (segments as samples, `TrainingContext.background` set)."""
    return METHODS.register(name, params, localization=localization)


class Windowed(Params):
    """Params of a method that modulates training in a window of epochs."""

    start_epoch: int = Field(0, ge=0, description="first epoch the method modulates (inclusive)")
    end_epoch: int | None = Field(None, ge=0, description="last epoch it modulates (inclusive); null: every epoch")

    @model_validator(mode="after")
    def _ordered(self) -> "Windowed":
        if self.end_epoch is not None and self.end_epoch < self.start_epoch:
            raise ValueError(f"end_epoch {self.end_epoch} is before start_epoch {self.start_epoch}")
        return self

    def active(self, epoch: int) -> bool:
        """Whether `epoch` lies in the inclusive window."""
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch <= self.end_epoch)


@dataclass(frozen=True)
class Needs:
    """What a method asks of the training loop."""

    #: share of training batches whose per-class embedding sums reach `before_epoch` (0: none)
    prototype_fraction: float = 0.0
    #: per-modality logits the model needs: "fusion" (only where the fusion splits), "unsplit" (add linear heads
    #: where it does not) or "own" (every modality its own linear head)
    modality_heads: Literal["fusion", "unsplit", "own"] = "fusion"
    #: share of training samples kept out of training for the method's own use (`TrainingContext.holdout_keys`)
    holdout: float = 0.0
    #: the modalities the model is built with (None: every modality of the data)
    modalities: tuple[str, ...] | None = None
    #: side tasks the method runs at once (`TrainingContext.start_tasks`), so the executor can reserve them
    parallel_tasks: int = 0
    #: some optimizer steps leave parts of the model without a gradient (data-parallel training must expect it)
    partial_steps: bool = False


@dataclass
class ClassSums:
    """Per-class embedding sums of each modality and per-class sample counts, over every rank."""

    sums: dict[str, torch.Tensor]
    counts: torch.Tensor


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.cross_entropy(logits, labels)


@dataclass
class TrainingContext:
    """What a bound method may use from the training loop."""

    model: MultimodalClassifier | None  # unwrapped (no DDP), for parameter access
    device: torch.device
    epochs: int = 1
    epoch: int = -1  # the epoch being trained, kept current by the loop
    batch: int = -1  # this rank's training batch being stepped, of `batches` this epoch, kept current by the loop
    batches: int = 0
    #: the problem's loss on fused logits (cross-entropy; localization may use AVEL's original one)
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _cross_entropy
    #: localization trains on segments: the background class, which prototype penalties leave out
    background: int | None = None
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor  # in place, over ranks
    rank: int = 0
    #: start `fn(config, device)` for each config as side tasks (from rank 0): returns what waits for the results,
    #: in order (a distributed executor runs them beside the training)
    start_tasks: Callable[[Callable[..., Any], list[Any]], Callable[[], list[Any]]] | None = None
    shards: Path | None = None  # the training shards and their manifest
    manifest: dict[str, Any] = field(default_factory=dict)
    train_keys: list[str] | None = None  # the samples training reads (None: all)
    holdout_keys: list[str] = field(default_factory=list)  # the samples kept out for the method (Needs.holdout)
    architecture: dict[str, Any] = field(default_factory=dict)  # the model's, for rebuilding it in side tasks
    teachers: list[Path] = field(default_factory=list)  # trained models wired as the step's `teachers` input
    params: Any = None  # the training step's params
    optimizer: torch.optim.Optimizer | None = None  # the loop's, e.g. to start a phase without momentum
    seed: int = 0


class BalanceMethod:
    """Plain joint training; subclasses override what they need."""

    params: Any
    #: what the loop provides; a property where it depends on the params or the fusion
    needs: Needs = Needs()
    #: the method learns from trained models, which the training step takes as its `teachers` input
    takes_teachers: ClassVar[bool] = False

    def __init__(self, params: Any, modalities: list[str], fusion: Choice, seed: int) -> None:
        self.params = params
        self.modalities = list(modalities)
        self.fusion = fusion
        self.seed = seed
        self.context: TrainingContext  # set by bind()
        self.setup()

    @classmethod
    def check(cls, params: Any, model: Any) -> None:
        """Raise ValueError naming the reason if the method cannot train `model` (the step's params: encoder,
        fusion); runs when a workflow is validated, so it reads no data."""

    def setup(self) -> None:
        """Check the params against the data's modalities (ValueError naming the problem) and set up state."""

    def bind(self, context: TrainingContext) -> None:
        """Called once before training with what the loop offers."""
        self.context = context

    def before_epoch(self, class_sums: ClassSums | None) -> None:
        """Called before each epoch with fresh class sums when `needs.prototype_fraction` asks for them."""

    def after_epoch(self) -> None:
        """Called on every rank after each epoch's training steps, before its metrics and checkpoint."""

    def substeps(self) -> Iterator[None]:
        """Yield once per optimizer step the loop takes on each training batch (one by default); between yields
        the method may change what its hooks do, e.g. which modality the next step trains."""
        yield

    def prepare_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Transform a training batch's inputs before the forward pass."""
        return features

    def loss(self, out: MultimodalOutput, labels: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """The batch loss to backpropagate and per-batch statistics."""
        return self.context.loss(out.logits, labels), {}

    def after_backward(self, out: MultimodalOutput, labels: torch.Tensor) -> Stats:
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


def build_method(params: Any, modalities: list[str], fusion: Choice | str, seed: int) -> BalanceMethod:
    """The method `params` name, set up for the data's modalities and the model's registered fusion (a name: a
    classifier fusion)."""
    return METHODS.of(params).target(params, modalities, FUSIONS.get(fusion) if isinstance(fusion, str) else fusion,
                                     seed)
