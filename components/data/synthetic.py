"""`data.synthetic`: the embedded k-modal classification source where one modality dominates."""

from __future__ import annotations

from pydantic import Field, model_validator

from mmflow.engine import Params, StepContext, component


class ModalitySpec(Params):
    """One synthetic modality: a noisy class-mean vector whose scale sets how informative it is."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="modality name, e.g. audio")
    dim: int = Field(32, ge=1, le=65536, description="feature dimension")
    signal: float | list[float] = Field(
        1.0, description="class-mean norm: one value, or one per class (class-conditional strength)"
    )
    noise: float = Field(1.0, ge=0, description="std of the isotropic Gaussian noise")
    informative: int | None = Field(
        None, ge=1, description="dimensions that carry the class signal (null: all); the rest is pure noise, "
        "which a model can memorize: few informative dimensions in a wide input overfit fast")


def _default_modalities() -> list[ModalitySpec]:
    return [ModalitySpec(name="audio", signal=2.0), ModalitySpec(name="visual", signal=1.2)]


class SyntheticParams(Params):
    """Sizes and per-modality signal of the synthetic source."""

    num_classes: int = Field(6, ge=2, le=10000, description="number of classes")
    train_size: int = Field(3000, ge=1, description="training samples")
    test_size: int = Field(1000, ge=1, description="test samples")
    modalities: list[ModalitySpec] = Field(
        default_factory=_default_modalities, min_length=1, description="the modalities, in order"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "SyntheticParams":
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        for m in self.modalities:
            if m.informative is not None and m.informative > m.dim:
                raise ValueError(f"modality '{m.name}': informative {m.informative} exceeds dim {m.dim}")
            if isinstance(m.signal, list) and len(m.signal) != self.num_classes:
                raise ValueError(
                    f"modality '{m.name}': signal has {len(m.signal)} values but num_classes is {self.num_classes}"
                )
        return self


@component("data.synthetic", params=SyntheticParams, outputs={"dataset": "dataset"})
def synthetic(ctx: StepContext, params: SyntheticParams) -> dict:
    """Synthetic imbalanced multimodal classification data, deterministic from the seed."""
    from .datasets import generate_synthetic, save_tensor_dataset

    splits = generate_synthetic(params, ctx.seed)
    save_tensor_dataset(ctx.output("dataset"), splits, params.num_classes)
    return {"train_samples": params.train_size, "test_samples": params.test_size,
            "modalities": len(params.modalities), "num_classes": params.num_classes}
