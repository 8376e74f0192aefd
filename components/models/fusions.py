"""The fusions a classifier can use, registered by name with their params and capabilities.

Capabilities: `splits` (the fused logits decompose into per-modality logits), `stage` (late: over
the embeddings; intermediate: inside staged encoders, `encoder: cnn` or `resnet18`), `modalities`
(how many it combines; None: any number) and `couples_encoders` (the modality streams exchange
features inside the encoders, so no modality's network runs alone). A builder turns the params,
the encoders and optional per-modality heads into a `MultimodalClassifier`. A package adds a fusion
with `@fusion(...)` on its builder and the entry-point group `mmflow.fusions`. This module stays
light (`mmflow validate` reads it): the builders import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field

from mmflow.engine import ChoiceTable, Params

if TYPE_CHECKING:
    from torch import nn

    from .multimodal import MultimodalClassifier

FUSIONS = ChoiceTable("fusion", "mmflow.fusions")
Builder = Callable[[Any, "dict[str, nn.Module]", int, "dict[str, nn.Module] | None"], "MultimodalClassifier"]


def fusion(name: str, params: type[Params], *, splits: bool, stage: Literal["late", "intermediate"] = "late",
           modalities: int | None = None, couples_encoders: bool = False) -> Callable[[Builder], Builder]:
    """Register the decorated builder `(params, encoders, num_classes, heads) -> MultimodalClassifier` as `name`."""
    return FUSIONS.register(name, params, splits=splits, stage=stage, modalities=modalities,
                            couples_encoders=couples_encoders)


def late(module: nn.Module, encoders: dict[str, nn.Module], heads: dict[str, nn.Module] | None) -> MultimodalClassifier:
    """A classifier fusing the encoders' embeddings with `module`: embeddings -> (logits, per-modality logits)."""
    from .multimodal import MultimodalClassifier

    return MultimodalClassifier(encoders, module, heads)


def _dims(encoders: dict[str, nn.Module]) -> dict[str, int]:
    return {m: e.out_dim for m, e in encoders.items()}


class ConcatParams(Params):
    """fc(cat(z_1..z_k)); each modality's logits use its block of the weight and 1/k of the bias."""

    name: Literal["concat"] = "concat"


@fusion("concat", ConcatParams, splits=True)
def concat(params: ConcatParams, encoders: dict[str, nn.Module], num_classes: int,
           heads: dict[str, nn.Module] | None) -> MultimodalClassifier:
    """Concatenation fusion."""
    from .fusion import ConcatFusion

    return late(ConcatFusion(_dims(encoders), num_classes), encoders, heads)


class SumParams(Params):
    """sum_m fc_m(z_m): each branch is that modality's logits."""

    name: Literal["sum"] = "sum"


@fusion("sum", SumParams, splits=True)
def sum_(params: SumParams, encoders: dict[str, nn.Module], num_classes: int,
         heads: dict[str, nn.Module] | None) -> MultimodalClassifier:
    """Sum fusion."""
    from .fusion import SumFusion

    return late(SumFusion(_dims(encoders), num_classes), encoders, heads)


class SharedParams(Params):
    """One linear head for every modality; fused by entropy weights (MLA's) or as a boosted sum (ReconBoost's)."""

    name: Literal["shared"] = "shared"
    combine: Literal["entropy", "sum"] = Field(
        "entropy", description="entropy: weigh each modality's logits per sample by softmax(-entropy) (MLA); sum: "
        "boost_rate * their sum, the boost rate learnt (ReconBoost)")
    boost_rate: float = Field(1.0, description="combine sum: the boost rate's starting value (ReconBoost's code: "
                              "1.0; BalanceBenchmark: 0.01)")


@fusion("shared", SharedParams, splits=True)
def shared(params: SharedParams, encoders: dict[str, nn.Module], num_classes: int,
           heads: dict[str, nn.Module] | None) -> MultimodalClassifier:
    """Shared-head fusion."""
    from .fusion import SharedHeadFusion

    return late(SharedHeadFusion(_dims(encoders), num_classes, params.combine, params.boost_rate), encoders, heads)


class FiLMParams(Params):
    """FiLM: the first modality produces (gamma, beta) that modulate the second: fc_out(gamma * z_1 + beta)."""

    name: Literal["film"] = "film"


@fusion("film", FiLMParams, splits=False, modalities=2)
def film(params: FiLMParams, encoders: dict[str, nn.Module], num_classes: int,
         heads: dict[str, nn.Module] | None) -> MultimodalClassifier:
    """FiLM fusion."""
    from .fusion import FiLMFusion

    return late(FiLMFusion(_dims(encoders), num_classes), encoders, heads)


class GatedParams(Params):
    """Gated: the first modality gates the second: fc_out(sigmoid(fc_0(z_0)) * fc_1(z_1))."""

    name: Literal["gated"] = "gated"
    hidden: int | None = Field(None, ge=1, description="width of the gate and the gated layer (null: the second "
                               "modality's embedding size)")


@fusion("gated", GatedParams, splits=False, modalities=2)
def gated(params: GatedParams, encoders: dict[str, nn.Module], num_classes: int,
          heads: dict[str, nn.Module] | None) -> MultimodalClassifier:
    """Gated fusion."""
    from .fusion import GatedFusion

    return late(GatedFusion(_dims(encoders), num_classes, params.hidden), encoders, heads)


class MMTMParams(Params):
    """MMTM (Joze et al., 2020): joint squeeze-excitation across the encoders' last stages, then concat."""

    name: Literal["mmtm"] = "mmtm"
    ratio: int = Field(4, ge=1, description="squeeze ratio: the joint layer has (sum of channels) / ratio units")
    stages: int = Field(3, ge=1, description="MMTM after each of the encoders' last `stages` stages")


@fusion("mmtm", MMTMParams, splits=True, stage="intermediate", couples_encoders=True)
def mmtm(params: MMTMParams, encoders: dict[str, nn.Module], num_classes: int,
         heads: dict[str, nn.Module] | None) -> MultimodalClassifier:
    """MMTM fusion (its concatenation splits, so it takes no extra heads)."""
    from .intermediate import MMTMClassifier

    return MMTMClassifier(encoders, num_classes, mmtm_stages=params.stages, ratio=params.ratio)


class CentralNetParams(Params):
    """CentralNet (Vielzeuf et al., 2018): a central stream mixing every stage's maps by learned weights."""

    name: Literal["centralnet"] = "centralnet"


@fusion("centralnet", CentralNetParams, splits=False, stage="intermediate")
def centralnet(params: CentralNetParams, encoders: dict[str, nn.Module], num_classes: int,
               heads: dict[str, nn.Module] | None) -> MultimodalClassifier:
    """CentralNet fusion."""
    from .intermediate import CentralNetClassifier

    return CentralNetClassifier(encoders, num_classes, heads)
